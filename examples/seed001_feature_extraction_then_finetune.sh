#!/usr/bin/env bash
# Seed 001 (cats vs dogs, Keras VGG16): feature extraction with a frozen pretrained trunk,
# then fine-tuning of the upper layers, keeping the best weights on validation, then
# accuracy on an out-of-sample test list. Here in ONE run: --freeze-epochs trains the heads
# alone first, then unfreezes the trunk from --unfreeze-from up; the best checkpoint is
# kept by validation accuracy and works with any number of devices (Keras' ModelCheckpoint
# did not under multi-GPU).
#   bash examples/seed001_feature_extraction_then_finetune.sh
set -e
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
SAVE=${SAVE:-results/seed001}
# With a GluonCV VGG16 .params file (its last block starts at conv10):
#   NET="--network vgg16 --model pretrained_model/vgg16-e660d456.params" UNFREEZE=conv10
NET=${NET:---network vgg11 --image-shape 3,64,64}
$PYTHON -m multitask_mx train $NET --num-classes 4 \
  --data-train data_example/train_data.lst --image-train data_example/images \
  --data-val data_example/val_data.lst --image-val data_example/images \
  --freeze-epochs 2 --unfreeze-from ${UNFREEZE:-conv6} --best-metric val-acc:label \
  --batch-size 16 --lr 0.01 --lr-scheduler cosine --num-epoch ${EPOCHS:-6} \
  --save-result $SAVE --save-name vgg "$@"
# Report the best weights on held-out data (seed 001 keeps a separate test set):
$PYTHON -m multitask_mx evaluate --save-result $SAVE --save-name vgg --epoch best \
  --data data_example/val_data.lst --image-root data_example/images
