fn main() {
    pgolf_buildid::stage_with_torch();
}
