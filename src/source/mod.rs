pub mod manifests;
