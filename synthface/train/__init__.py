"""Training: one stack every trainer uses (engine), named losses, face datasets, the face
recognition trainer (`synthface train recognition`), and StyleGAN2 on image folders.

    Trainer(out, epochs, batch).fit(model, dataset, make_optimizer)   seeded, resumable, DDP under torchrun
    ArcFace / CosFace / CombinedMarginLoss, MarginHead, TripletLoss   synthface.train.losses
    FaceDataset(source, labels=(...))                                 synthface dataset, rec, ImageFolder, CSV
    train_recognition(RecognitionConfig(...))                         synthface.train.recognition
"""

from .data import FaceDataset
from .engine import PolyWarmup, Trainer, seed_everything
from .losses import ArcFace, CombinedMarginLoss, CosFace, MarginHead, TripletLoss, margin_loss

__all__ = ["Trainer", "PolyWarmup", "seed_everything", "FaceDataset", "ArcFace", "CosFace", "CombinedMarginLoss",
           "MarginHead", "TripletLoss", "margin_loss"]
