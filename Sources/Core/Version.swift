/// The version of nemoshard, in one place: `nemoshard --version` prints it, and anything that
/// records which nemoshard wrote an output reads it from here.
package enum NemoShardVersion {
    /// Semantic version, e.g. `0.7.0`.
    package static let string = "0.7.0"
}
