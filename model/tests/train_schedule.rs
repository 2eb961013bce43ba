//! The per-epoch warm-up cosine schedule (Lightning-bolts `LinearWarmupCosineAnnealingLR`, chainable form).

use logonet::train::schedule::LrSchedule;

#[test]
fn warmup_cosine_follows_the_reference_formula() {
    let base = 1e-4;
    let mut s = LrSchedule::warmup_cosine(base, 50, 5000).unwrap();
    let mut lrs = vec![s.lr()];
    for _ in 0..5001 {
        lrs.push(s.step());
    }
    assert_eq!(s.epoch(), 5001);
    // Epoch 0 trains with warmup_start_lr = 0 (the reference's quirk), then a linear ramp over 49 epochs.
    assert_eq!(lrs[0], 0.0);
    assert!((lrs[1] - base / 49.0).abs() < 1e-18);
    assert!((lrs[49] - base).abs() < 1e-15, "{}", lrs[49]);
    assert_eq!(lrs[50], base);
    // Cosine: half way at epoch 50 + 4950/2, zero at max_epochs.
    assert!((lrs[2525] - base / 2.0).abs() < 1e-12, "{}", lrs[2525]);
    assert!(lrs[5000].abs() < 1e-15, "{}", lrs[5000]);
    // The chained rates agree with the closed form everywhere in [0, max_epochs].
    let LrSchedule::WarmupCosine(w) = &s else {
        panic!("kind")
    };
    for (e, lr) in lrs.iter().enumerate().take(5001) {
        assert!(
            (lr - w.closed_form_lr(e)).abs() <= 1e-12 * base + 1e-19,
            "epoch {e}: {lr} vs {}",
            w.closed_form_lr(e)
        );
    }
    // Monotone: up during warm-up, down afterwards.
    assert!(lrs[..50].windows(2).all(|p| p[1] >= p[0]));
    assert!(lrs[50..=5000].windows(2).all(|p| p[1] <= p[0]));
}

#[test]
fn schedule_serialises_its_position() {
    let mut s = LrSchedule::warmup_cosine(2e-4, 3, 10).unwrap();
    for _ in 0..5 {
        s.step();
    }
    let json = serde_json::to_string(&s).unwrap();
    let mut back: LrSchedule = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.step(), s.step());
    let mut c = LrSchedule::constant(3e-4);
    assert_eq!(c.step(), 3e-4);
    assert_eq!(c.epoch(), 1);
}

#[test]
fn degenerate_warmup_is_rejected() {
    assert!(LrSchedule::warmup_cosine(1e-4, 0, 10).is_err());
    assert!(LrSchedule::warmup_cosine(1e-4, 10, 10).is_err());
}
