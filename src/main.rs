fn main() {
    print!("{}", spangate::api::crd_yaml());
}
