//! IPFS publishing.
