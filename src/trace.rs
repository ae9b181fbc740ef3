//! Tracing spans around switches (stub; filled in next).
use crate::green::{Green, GreenId};

pub(crate) struct GreenTrace;
impl GreenTrace {
    pub(crate) fn new(_g: &Green) -> GreenTrace { GreenTrace }
}
pub(crate) struct Slice;
impl Slice {
    pub(crate) fn enter(_t: &GreenTrace) -> Slice { Slice }
}
pub(crate) fn sched_event(_what: &str, _id: GreenId) {}
pub(crate) fn park_event(_worker: usize) {}
