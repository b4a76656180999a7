"""The paper's experiments as sweep grids (POSD paper, sec. 4.3-4.4, Tables 1-13).

Each entry holds the grid and the table it reproduces. Where the paper leaves a value out, the
choice is named in ``notes``. The published numbers are in :mod:`train.experiments.paper_results`.
"""
from __future__ import annotations

from typing import Any, Dict

LIGHT = (("cifar10", "cifar_cnn"), ("svhn", "cifar_cnn"), ("fashion_mnist", "fashion_cnn"))
KNN4 = (2, 4, 8, 10)
STEP60 = ("--milestones", "60", "120", "180", "--gamma", "0.1")   # "dropped by 0.1 every 60 epochs"

PRESETS: Dict[str, Dict[str, Any]] = {
    "table1": dict(table="Table 1", pairs=(("cifar10", "cifar_cnn"),), methods=("ce", "posd"), knn=(4,),
                   lam=(0.1, 0.01, 0.001, 0.0001, 0.00001), batch_size=(64,), seeds=5,
                   about="lambda sweep, CIFAR-10, lightweight CNN, batch 64, 4NN"),
    "table2": dict(table="Table 2", pairs=LIGHT, methods=("ce", "posd"), knn=KNN4, batch_size=(32,), seeds=5,
                   about="CIFAR-10 / SVHN / Fashion-MNIST, lightweight CNNs, batch 32"),
    "table3": dict(table="Table 3", pairs=LIGHT, methods=("ce", "posd"), knn=KNN4, batch_size=(64,), seeds=5,
                   about="CIFAR-10 / SVHN / Fashion-MNIST, lightweight CNNs, batch 64"),
    "table4": dict(table="Table 4", pairs=LIGHT, methods=("ce", "posd"), knn=KNN4, batch_size=(128,), seeds=5,
                   about="CIFAR-10 / SVHN / Fashion-MNIST, lightweight CNNs, batch 128"),
    "table5": dict(table="Table 5", pairs=(("tiny_imagenet", "resnet50"),), methods=("ce", "posd"), knn=KNN4,
                   batch_size=(64,), seeds=5, train_args=("--preset", "lightweight"),
                   about="Tiny-ImageNet 64x64, ResNet-50, the lightweight recipe (lr 1e-3, 100 epochs)",
                   notes="batch size not stated for Table 5: 64 assumed"),
    "table6": dict(table="Table 6", pairs=(("crowd_synth", "crowd_fcn"),), methods=("ce", "posd"), knn=KNN4,
                   batch_size=(32,), seeds=5,
                   about="Crowd-drone (here the built-in synthetic stand-in; add --train-args '--data DIR' "
                         "for the real set), crowd_fcn, batch 32"),
    "table7": dict(table="Table 7", pairs=(("cifar10", "wrn_16_2"),), methods=("ce", "posd"), knn=(2,),
                   batch_size=(128,), seeds=5,
                   about="WRN-16-2, CIFAR-10: Nesterov lr 0.1, x0.2 at 60/120/160, 200 epochs, batch 128"),
    "table8": dict(table="Table 8", pairs=(("cifar10", "resnet32"),), methods=("ce", "posd", "dml"), knn=(2,),
                   batch_size=(64,), seeds=5, train_args=STEP60,
                   about="ResNet-32, CIFAR-10: Nesterov lr 0.1, x0.1 every 60 epochs, 200 epochs, batch 64",
                   notes="k not stated for Tables 8-13: 2 (Table 7's best); weight decay 5e-4 assumed; "
                         "add kd with --methods ... kd --teacher PATH (paper: ResNet-110 teacher)"),
    "table9": dict(table="Table 9", pairs=(("cifar100", "resnet32"),), methods=("ce", "posd", "dml"), knn=(2,),
                   batch_size=(64,), seeds=5, train_args=STEP60,
                   about="ResNet-32, CIFAR-100: as Table 8"),
    "table10": dict(table="Table 10", pairs=(("cifar10", "wrn_28_10"),), methods=("ce", "posd", "dml"), knn=(2,),
                    batch_size=(128,), seeds=5, train_args=STEP60,
                    about="WRN-28-10, CIFAR-10: Nesterov lr 0.1, x0.1 every 60 epochs, 200 epochs, batch 128"),
    "table11": dict(table="Table 11", pairs=(("cifar100", "wrn_28_10"),), methods=("ce", "posd", "dml"), knn=(2,),
                    batch_size=(128,), seeds=5, train_args=STEP60, about="WRN-28-10, CIFAR-100: as Table 10"),
    "table12": dict(table="Table 12", pairs=(("cifar10", "wrn_20_8"),), methods=("ce", "posd", "dml"), knn=(2,),
                    batch_size=(128,), seeds=5, epochs=300,
                    train_args=("--milestones", "150", "225", "--gamma", "0.1"),
                    about="WRN-20-8, CIFAR-10: lr 0.1, /10 at 150 and 225, 300 epochs, batch 128"),
    "table13": dict(table="Table 13", pairs=(("cifar100", "wrn_20_8"),), methods=("ce", "posd", "dml"), knn=(2,),
                    batch_size=(128,), seeds=5, epochs=300,
                    train_args=("--milestones", "150", "225", "--gamma", "0.1"),
                    about="WRN-20-8, CIFAR-100: as Table 12"),
    # what runs offline on a laptop CPU: the results in docs/results.md
    "offline": dict(table=None, pairs=(("digits", "cifar_cnn"), ("crowd_synth", "crowd_fcn")),
                    methods=("ce", "posd", "oskd"), knn=KNN4, seeds=5, epochs=50,
                    train_args=("--synth-size", "300"),
                    about="offline data (digits, built-in crowd_synth), CE / POSD / OSKD at the paper's kNN"),
}
