"""Make a small real MaxQ checkpoint to try the walkthroughs on, without any download.

Trains a MaxQ 2:4 ResNet-18 with the reference layers on scikit-learn's handwritten digits
(upscaled to 32x32) and prints shell assignments for the files, e.g.:

    eval "$(python examples/make_digits_example.py --workdir work)"
    echo $CKPT $TRAIN $TEST
"""

from __future__ import annotations

import argparse
import shlex

from maxq_deploy.reference.train import prepare_digits_example


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="maxq-example")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--nm", default="2:4", help="trained N:M, e.g. 4:8 for the README's road to 2:4")
    args = parser.parse_args()
    example = prepare_digits_example(args.workdir, arch=args.arch, nm=args.nm, epochs=args.epochs)
    for name, value in (("CKPT", example.checkpoint), ("TRAIN", example.train_npz), ("TEST", example.test_npz),
                        ("SIZE", example.image_size)):
        print(f"{name}={shlex.quote(str(value))}")


if __name__ == "__main__":
    main()
