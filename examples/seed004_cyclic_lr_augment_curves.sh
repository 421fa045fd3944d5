#!/usr/bin/env bash
# Seed 004 (plant seedlings, Keras ResNet-50): all layers trainable, hand-tuned augmentation
# (crop, stretch, flips, brightness, colour), the checkpoint with the lowest validation loss
# kept, a cyclic-decaying learning rate, and live training curves (curves.png is redrawn
# after every epoch in the save folder), with the small dataset held in RAM.
#   bash examples/seed004_cyclic_lr_augment_curves.sh
set -e
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
SAVE=${SAVE:-results/seed004}
NET=${NET:---network resnet18_v1 --image-shape 3,64,64}
AUGMENT="--rand-crop-scale 0.5,1 --aspect-stretch 0.15 --vflip --rotate 15
  --brightness 0.3 --contrast 0.3 --saturation 0.3 --hue 0.05"
SCHEDULE="--lr-scheduler cyclic --cycle-epochs 4 --cycle-decay 0.7 --lr 0.02 --num-epoch ${EPOCHS:-12}"
mkdir -p $SAVE
# What the network sees, and the schedule, before spending any training time:
$PYTHON -m multitask_mx train $NET $AUGMENT $SCHEDULE --num-classes 4 \
  --data-train data_example/train_data.lst --image-train data_example/images --save-result $SAVE \
  --preview-augmentation 32 --preview-out $SAVE/augmentation.png --plot-lr $SAVE/lr.png
$PYTHON -m multitask_mx train $NET $AUGMENT $SCHEDULE --num-classes 4 \
  --data-train data_example/train_data.lst --image-train data_example/images \
  --data-val data_example/val_data.lst --image-val data_example/images \
  --best-metric val-loss --cache-images --batch-size 32 \
  --save-result $SAVE --save-name seedlings "$@"
echo "curves: $SAVE/curves.png  best weights: $SAVE/seedlings-best.params"
