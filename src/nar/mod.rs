//! NAR (Nix ARchive) format.
