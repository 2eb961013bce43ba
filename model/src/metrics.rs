//! Segmentation metrics with MONAI semantics: Dice, HD95, normalised surface Dice, volumes.
