//! The networks: ULKANet (`VANV412`), the LoGoNet sub-network (`VANV4121`), LoGoNet (`VANV4122GL`) and its
//! InstanceNorm twin (`VANV4121GL`), exactly as the authors' code (see `../shared/spec/logonet.md`).
