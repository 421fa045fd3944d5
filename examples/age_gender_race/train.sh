#!/bin/sh
# Task kinds end to end with small settings (a few minutes on 2 CPU cores): draw the data, train a
# regression ("age" = blob size), two softmax tasks (colour, shape) and three yes/no attributes,
# then evaluate and predict. Usage: sh examples/age_gender_race/train.sh [OUT_DIR]
set -e
OUT=${1:-runs/age_gender_race}
PYTHON=${PYTHON:-python}
$PYTHON examples/age_gender_race/make_data.py "$OUT/data" --train 300 --val 100 --size 32
# --no-augment: crops and scale changes would change the blob's apparent size, the regression target
$PYTHON -m multitask_mx train --data-train "$OUT/data/train.csv" --data-val "$OUT/data/val.csv" \
  --task-types regress,class,class,multilabel:3 --pos-weight auto --no-augment \
  --network cifar_resnet20_v1 --image-shape 3,32,32 --batch-size 16 --lr 0.02 --num-epoch 10 \
  --data-nthreads 0 --seed 1 --save-result "$OUT/run" --overwrite --quiet
$PYTHON -m multitask_mx evaluate --save-result "$OUT/run" --data "$OUT/data/val.csv"
$PYTHON -m multitask_mx predict "$OUT/data/images/val_0000.png" "$OUT/data/images/val_0001.png" \
  --save-result "$OUT/run"
