//! The protobuf messages of `proto/meshgroup.proto`, generated at build time.
#![allow(clippy::all)]
include!(concat!(env!("OUT_DIR"), "/meshgroup.v1.rs"));
