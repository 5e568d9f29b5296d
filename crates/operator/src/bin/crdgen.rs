//! `crdgen`: print Weft's CustomResourceDefinitions (`deploy/crds.yaml`).

fn main() {
    print!("{}", weft_operator::crds_yaml());
}
