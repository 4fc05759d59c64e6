use crate::common::World;
