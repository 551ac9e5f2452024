fn main() {
    pgolf_buildid::stage();
}
