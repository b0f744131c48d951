fn main() {
    println!("settlement {}", settlement::version());
}
