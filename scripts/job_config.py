"""Client-side settings shared by the notebook and the tests: the CloudWatch metric definitions, written
against the per-epoch line train.py logs:

    epoch=3 train_loss=0.2311 val_loss=0.1950 val_auc=0.9871 val_acc=0.9420 lr=0.00091 images_per_sec=812.4
"""
NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"

METRIC_DEFINITIONS = [
    {"Name": name, "Regex": rf"\b{key}={NUMBER}"}
    for name, key in (
        ("epoch", "epoch"),
        ("train_loss", "train_loss"),
        ("val_loss", "val_loss"),
        ("val_auc", "val_auc"),
        ("val_acc", "val_acc"),
        ("lr", "lr"),
        ("images_per_sec", "images_per_sec"),
        ("test_auc", "test_auc"),
        ("test_acc", "test_acc"),
    )
]
