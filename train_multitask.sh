#!/usr/bin/env bash
# Fine-tune a multi-task classifier: task 1 = the class in the .lst, task 2 = "label > 0".
# Same shape as multi-task-MXNet's train_multitask.sh: edit the paths and numbers below, then
#   sh train_multitask.sh
# Each variable can also be set from the environment (DATA_TRAIN=... SAVE_RESULT=... sh train_multitask.sh),
# and flags after the script's name are added to the train command (later flags win).
# Every flag is listed by `python -m multitask_mx train --help`.
set -e
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python}

# Your lists (index<TAB>label<TAB>path) and the folders their paths are relative to.
DATA_TRAIN=${DATA_TRAIN:-data_example/train_data.lst}
IMAGE_TRAIN=${IMAGE_TRAIN:-data_example/images}
DATA_VAL=${DATA_VAL:-data_example/val_data.lst}
IMAGE_VAL=${IMAGE_VAL:-data_example/images}
NUM_CLASSES=${NUM_CLASSES:-4}
SAVE_RESULT=${SAVE_RESULT:-results/}  # checkpoints, train.log, history.json/csv, curves.png, config.json
SAVE_NAME=${SAVE_NAME:-resnet-50}
GPUS=${GPUS:-}               # '' = CPU; 0 or 0,1,2,3 = GPUs (needs an mxnet-cuXXX build)

# The classic ImageNet ResNet-50 checkpoint, if you downloaded it (pretrained_model/README.md):
MODEL=${MODEL:-pretrained_model/resnet-50}
if [ -f "$MODEL-symbol.json" ] && [ -f "$MODEL-0000.params" ]; then
  # Fine-tune from it at full size, as the original does.
  NET="--model $MODEL --epoch 0 --image-shape 3,224,224 --batch-size 16 --lr 0.001 --num-epoch 10"
else
  # No pretrained weights here (nothing is downloaded): train a small network from
  # scratch on the example images at 32x32. CIFAR's ResNet-20 keeps the small images' detail
  # (ImageNet networks shrink them 32x at once); batch, lr, schedule and augmentation are the
  # defaults (docs/reference.md "Defaults that learn").
  # Measured (benchmarks/results/, docs/benchmarks.md): bench_demo.json, 2 AMD EPYC cores with AVX-512,
  # quiet, seeds 1-3: 23-26 s per run, held-out `label` accuracy 0.69 / 0.70 / 0.78 (resnet18_v1 at
  # 64x64, batch 32: 0.49 / 0.43 / 0.53 in 37-41 s). The same network's 2,000 images x 5 epochs took
  # 17.2 s there and 27.2 s on 2 cores without AVX-512 with older code (bench_small_net_avx2.json); other
  # work on the cores stretches it further: train.log's first lines give the machine and its load.
  echo "train_multitask.sh: no $MODEL-0000.params, training cifar_resnet20_v1 from scratch (see pretrained_model/README.md)"
  echo "train_multitask.sh: measured 23-26 s on 2 quiet AVX-512 cores (docs/benchmarks.md); longer without AVX-512 or with other work running"
  NET="--network cifar_resnet20_v1 --image-shape 3,32,32 --num-epoch 15"
fi

$PYTHON -m multitask_mx train $NET --num-classes $NUM_CLASSES \
  --data-train $DATA_TRAIN --image-train $IMAGE_TRAIN \
  --data-val $DATA_VAL --image-val $IMAGE_VAL \
  --gpus "$GPUS" --save-result $SAVE_RESULT --save-name $SAVE_NAME \
  --classes ${CLASSES:-data_example/classes.txt} "$@"
