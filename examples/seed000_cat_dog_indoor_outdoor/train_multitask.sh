#!/usr/bin/env bash
# Seed 000 (cat/dog + indoor/outdoor: two independent labels per image) as a two-column .lst,
# on data_example/: column 1 = the shape (4 classes), column 2 = bright/dark background
# (derived from the pixels, -1 where unsure; see README.md here). Same shape as ../../train_multitask.sh:
#   bash examples/seed000_cat_dog_indoor_outdoor/train_multitask.sh [more train flags]
set -e
HERE="$(cd "$(dirname "$0")" && pwd)"
cd "$HERE/../.."
PYTHON=${PYTHON:-python}
LISTS=${LISTS:-results/seed000_lists}   # written by make_lists.py below
SAVE_RESULT=${SAVE_RESULT:-results/seed000}
IMAGES=data_example/images

# 1. index<TAB>shape<TAB>bright_bg<TAB>path lists and a classes file with [task] sections
$PYTHON "$HERE/make_lists.py" --data data_example --out $LISTS

# 2. two tasks from the two columns, plus a derived one (has_shape = shape > 0); the task
#    losses are weighted by learned uncertainties; unknown labels (-1) train only the other head
NET=${NET:---network resnet18_v1 --image-shape 3,64,64 --batch-size 32 --lr 0.01 --lr-scheduler cosine}
$PYTHON -m multitask_mx train $NET --num-epoch ${EPOCHS:-15} \
  --data-train $LISTS/train.lst --image-train $IMAGES \
  --data-val $LISTS/val.lst --image-val $IMAGES \
  --num-classes 4,2 --task-names shape,bright_bg --classes $LISTS/classes.txt \
  --derived-task 'has_shape=shape>0' \
  --loss-weighting uncertainty --class-weights auto --top-k 2 \
  --best-metric val-acc:bright_bg \
  --save-result $SAVE_RESULT --save-name seed000 "$@"
