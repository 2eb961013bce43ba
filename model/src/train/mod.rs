//! Supervised training and fine-tuning: DiceCE, AdamW, warm-up cosine schedule, augmentation, checkpoints.
