//! TFTP on the wire, with no I/O: the packet codec, option negotiation, block numbering and the
//! rules for file names. Everything above builds on this layer, and it imports nothing of ours,
//! so the codec can be fuzzed and property-tested on its own.

pub mod blocks;
pub mod names;
pub mod options;
pub mod packet;
