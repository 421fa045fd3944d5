"""The plain PyTorch baseline of bench_small_net.py: a two-head CIFAR ResNet-20 in one short script.

Run by bench_small_net.py with a Python that has torch (and numpy, opencv), in a process of its own:

    PY_TORCH benchmarks/torch_baseline.py --step --batch-size 64 --size 32 --batches 30
        training steps on one in-memory batch: prints {"img_s": ...}
    PY_TORCH benchmarks/torch_baseline.py --job --train T.lst --val V.lst --root DIR --epochs 5
        the whole job from .lst files of images: cv2 decode, resize, pad-crop + flip, DataLoader
        workers, SGD momentum 0.9 wd 1e-4, cosine lr, a validation pass per epoch; prints
        {"val_acc": ..., "train_s": ...}
    PY_TORCH benchmarks/torch_baseline.py --job ... --lr 0.1 --schedule step
        the reference recipe of bench_learning's grid (issue 24): the same, with the lr x0.1 after
        1/2 and 3/4 of the updates (the CIFAR ResNet schedule, scaled to the run)

It is what a user would write by hand (issue 13: "a plain PyTorch script"), kept free of this
package on purpose. Threads: torch's intra-op pool takes OMP_NUM_THREADS, set by the caller.
"""
import argparse
import json
import math
import time

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class Block(nn.Module):
    """CIFAR ResNet basic block (v1: conv-bn-relu, conv-bn, add, relu)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.down = None if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
        return F.relu(y + (x if self.down is None else self.down(x)))


class TwoHeadResNet20(nn.Module):
    """ResNet-20 (3 stages of 3 blocks, 16/32/64 channels) with a 10-class and a 2-class head."""

    def __init__(self, classes=10):
        super().__init__()
        layers, cin = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                layers.append(Block(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.trunk = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.heads = nn.ModuleList([nn.Linear(64, classes), nn.Linear(64, 2)])

    def forward(self, x):
        f = self.trunk(x)
        return [h(f) for h in self.heads]


def step_fn(net, opt):
    """One SGD step on (x, y): the sum of both heads' cross-entropies (the second task is y > 0)."""
    def step(x, y):
        out = net(x)
        loss = F.cross_entropy(out[0], y) + F.cross_entropy(out[1], (y > 0).long())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def bench_step(args):
    """img/s of training steps on one in-memory batch, after warm-up."""
    net = TwoHeadResNet20()
    step = step_fn(net, torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4))
    x, y = torch.randn(args.batch_size, 3, args.size, args.size), torch.randint(0, 10, (args.batch_size,))
    for _ in range(args.warmup):
        step(x, y)
    tic = time.time()
    for _ in range(args.batches):
        step(x, y)
    return {"img_s": args.batch_size * args.batches / (time.time() - tic), "threads": torch.get_num_threads()}


class LstImages(torch.utils.data.Dataset):
    """index<TAB>label<TAB>path lines; images decoded by OpenCV, resized, augmented when training."""

    MEAN, STD = np.array([0.485, 0.456, 0.406]) * 255, np.array([0.229, 0.224, 0.225]) * 255

    def __init__(self, lst, root, size, train):
        self.items = [(int(float(p[1])), p[-1]) for p in (line.rstrip("\n").split("\t") for line in open(lst))]
        self.root, self.size, self.train = root, size, train

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        label, path = self.items[i]
        img = cv2.resize(cv2.imread("%s/%s" % (self.root, path))[:, :, ::-1], (self.size, self.size))
        if self.train:  # CIFAR's pad by 1/8 (reflected), random crop back, random mirror
            pad = self.size // 8
            img = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
            dy, dx = np.random.randint(0, 2 * pad + 1, 2)
            img = img[dy:dy + self.size, dx:dx + self.size]
            if np.random.rand() < 0.5:
                img = img[:, ::-1]
        x = ((img - self.MEAN) / self.STD).astype(np.float32).transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(x)), label


def lr_at(args, done, total):
    """The lr of update ``done`` (from 0) of ``total``: cosine over the run, or step (x0.1 at 1/2 and 3/4)."""
    if args.schedule == "step":
        return args.lr * 0.1 ** sum(done >= f * total for f in (0.5, 0.75))
    return args.lr * 0.5 * (1 + math.cos(math.pi * done / total))


def run_job(args):
    """Train --epochs over --train, validate on --val after each; the last validation accuracy."""
    torch.manual_seed(args.seed)
    net = TwoHeadResNet20()
    opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4)
    loader = torch.utils.data.DataLoader(LstImages(args.train, args.root, args.size, True), batch_size=args.batch_size,
                                         shuffle=True, num_workers=args.workers, persistent_workers=args.workers > 0)
    val = torch.utils.data.DataLoader(LstImages(args.val, args.root, args.size, False), batch_size=args.batch_size,
                                      num_workers=args.workers)
    total, step, tic = args.epochs * len(loader), step_fn(net, opt), time.time()
    done, acc = 0, float("nan")
    for _ in range(args.epochs):
        net.train()
        for x, y in loader:
            for group in opt.param_groups:  # set per step
                group["lr"] = lr_at(args, done, total)
            step(x, y)
            done += 1
        net.eval()
        with torch.no_grad():
            right = sum(int((net(x)[0].argmax(1) == y).sum()) for x, y in val)
        acc = right / len(val.dataset)
    return {"val_acc": acc, "train_s": time.time() - tic, "threads": torch.get_num_threads()}


def main():
    """Parse flags, run --step or --job, print one JSON line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--step", action="store_true")
    p.add_argument("--job", action="store_true")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batches", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--train")
    p.add_argument("--val")
    p.add_argument("--root")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--schedule", choices=("cosine", "step"), default="cosine")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    print(json.dumps(bench_step(args) if args.step else run_job(args)))


if __name__ == "__main__":
    main()
