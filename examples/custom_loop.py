"""DINO in your own loop with dinolite's public API: Fashion-MNIST, a small ViT, a few steps, then the
teacher's k-NN beside the same network at random initialisation.

    python examples/custom_loop.py [--steps 30] [--batch 64]
"""

from __future__ import annotations

import argparse

import torch

import dinolite
from dinolite import DINOLoss, DINOTrainer, FashionMNIST, MultiCrop, build_student_teacher, knn_accuracy


def features(backbone, images: torch.Tensor) -> torch.Tensor:
    """CLS features of uint8 images, normalised as in training."""
    with torch.no_grad():
        return backbone.eval()((images.float() / 255 - 0.286) / 0.353)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=64)
    args = p.parse_args(argv)
    torch.manual_seed(0)

    train, test = FashionMNIST(split="train", subset=4000), FashionMNIST(split="test", subset=1000)
    batches = [train.images[i:i + args.batch] for i in range(0, args.steps * args.batch, args.batch)]

    student, teacher = build_student_teacher(arch="vit_tiny_patch16_224", patch_size=7, embed_dim=64, depth=2,
                                             num_heads=2, out_dim=256, hidden_dim=128, bottleneck_dim=32,
                                             drop_path_rate=0.0, in_chans=1, img_size=28)
    random_init = build_student_teacher(arch="vit_tiny_patch16_224", patch_size=7, embed_dim=64, depth=2,
                                        num_heads=2, out_dim=256, in_chans=1, img_size=28)[1].backbone
    multicrop = MultiCrop(global_crops_size=28, local_crops_number=2, local_crops_size=14,
                          local_crops_scale=[0.1, 0.4], blur_sigma=[0.1, 1.0], mean=[0.286], std=[0.353])
    trainer = DINOTrainer(student, teacher, multicrop, DINOLoss(256), lr=2e-3, warmup_steps=args.steps // 4,
                          momentum_teacher=0.99, device="cpu")

    def after_step(t: DINOTrainer, figures: dict) -> None:
        if figures["step"] % 10 == 0:
            print(f"step {figures['step']:4d}  loss {figures['loss']:.3f}  lr {figures['lr']:.2e}")

    history = trainer.fit(batches, epochs=1, after_step=after_step)
    scores = {}
    for name, backbone in (("teacher", teacher.backbone), ("random init", random_init)):
        bank, queries = features(backbone, train.images[:2000]), features(backbone, test.images)
        scores[name] = knn_accuracy(queries, test.labels, bank, train.labels[:2000], 10, k=20, temperature=0.07)["top1"]
    print(f"k-NN top-1 after {len(history)} steps: teacher {scores['teacher']:.2f} %, "
          f"random init {scores['random init']:.2f} % (dinolite {dinolite.__version__})")
    return {"history": history, "knn": scores}


if __name__ == "__main__":
    main()
