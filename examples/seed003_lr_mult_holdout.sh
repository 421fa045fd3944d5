#!/usr/bin/env bash
# Seed 003 (dog breeds, Xception): split the images 70/20/10 into train/validation/holdout,
# fine-tune with Adam and a 0.1x learning rate on the pretrained layers (per-parameter
# lr_mult, no custom optimizer needed), then report holdout accuracy, a confusion matrix and
# a per-class report.
#   bash examples/seed003_lr_mult_holdout.sh
set -e
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
SAVE=${SAVE:-results/seed003}
mkdir -p $SAVE
# 1. train/val/test lists from a folder of class folders (im2rec --list style)
$PYTHON -m multitask_mx make-list $SAVE/shapes data_example/images --split 0.7,0.2,0.1 --seed 3
# 2. fine-tune: the trunk at 0.1 x --lr
NET=${NET:---network resnet18_v1 --image-shape 3,64,64}
$PYTHON -m multitask_mx train $NET \
  --data-train $SAVE/shapes_train.lst --image-train data_example/images \
  --data-val $SAVE/shapes_val.lst --image-val data_example/images \
  --optimizer adam --lr 0.001 --trunk-lr-mult 0.1 --lr-scheduler step --lr-step-epochs 8 \
  --batch-size 32 --num-epoch ${EPOCHS:-10} --rand-crop-scale 0.5,1 \
  --save-result $SAVE --save-name breeds "$@"
# 3. holdout: accuracy, confusion matrix (PNG too) and per-class precision/recall/F1
$PYTHON -m multitask_mx evaluate --save-result $SAVE --save-name breeds --epoch best \
  --data $SAVE/shapes_test.lst --image-root data_example/images \
  --json $SAVE/holdout.json --confusion-png $SAVE/holdout_confusion.png
