// WARNING: generated file — do not edit
pub mod standard;
