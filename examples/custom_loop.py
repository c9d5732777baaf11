"""DINO in your own loop with dinolite's public API: the quickstart's objective (KoLeo, Sinkhorn-Knopp,
iBOT) on a smaller ViT, 250 Fashion-MNIST batches of 64, then the teacher's k-NN beside the same
network at random initialisation.

    python examples/custom_loop.py [--steps 250] [--batch 64]
"""

from __future__ import annotations

import argparse
import copy

import torch

import dinolite
from dinolite import DINOTrainer, FashionMNIST, knn_accuracy

# The quickstart recipe with a smaller ViT and batch, so the example runs in about 20 s on 2 CPU cores.
SMALLER = ["model.embed_dim=64", "model.depth=2", "model.num_heads=2", "model.out_dim=256", "model.hidden_dim=256",
           "model.bottleneck_dim=64"]


def features(backbone, images: torch.Tensor) -> torch.Tensor:
    """CLS features of uint8 images, normalised as in training."""
    with torch.no_grad():
        return backbone.eval()((images.float() / 255 - 0.286) / 0.353)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--batch", type=int, default=64)
    args = p.parse_args(argv)

    train, test = FashionMNIST(split="train", subset=args.steps * args.batch), FashionMNIST(split="test", subset=5000)
    batches = [train.images[i:i + args.batch] for i in range(0, args.steps * args.batch, args.batch)]
    trainer = DINOTrainer("quickstart", [*SMALLER, f"optim.batch_size={args.batch}", f"optim.total_steps={args.steps}"],
                          in_chans=1, device="cpu")
    random_init = copy.deepcopy(trainer.teacher.backbone)  # where the teacher starts

    def after_step(t: DINOTrainer, figures: dict) -> None:
        if figures["step"] % 100 == 0:  # float() waits for the step: only when printing
            print(f"step {figures['step']:4d}  loss {float(figures['loss']):.3f}  lr {figures['lr']:.2e}")

    history = trainer.fit(batches, after_step=after_step)
    scores = {}
    # 5,000 queries: each figure within about 0.7 points (one standard error); a small bank (about 100 images
    # a class) sets learned features further apart from random ones than a large one does
    bank, bank_labels = train.images[:1000], train.labels[:1000]
    for name, backbone in (("teacher", trainer.teacher.backbone), ("random init", random_init)):
        scores[name] = knn_accuracy(features(backbone, test.images), test.labels, features(backbone, bank),
                                    bank_labels, 10, k=20, temperature=0.07)["top1"]
    print(f"k-NN top-1 after {len(history)} steps: teacher {scores['teacher']:.2f} %, "
          f"random init {scores['random init']:.2f} % (dinolite {dinolite.__version__})")
    return {"history": history, "knn": scores}


if __name__ == "__main__":
    main()
