// libFuzzer target: the safetensors header validator on whole file images.
// Built by scripts/fuzz (swiftc -sanitize=fuzzer,address); not part of the package.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHeader(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let image = Array(UnsafeBufferPointer(start: data, count: size))
    guard let header = try? SafetensorsHeader.parse(fileImage: image, path: "fuzz") else { return 0 }
    // What a valid header promises must hold.
    var cursor = 0
    for t in header.tensors.sorted(by: { ($0.begin, $0.end) < ($1.begin, $1.end) }) {
        precondition(t.begin == cursor && t.end >= t.begin, "offsets do not tile")
        precondition(t.byteCount == t.elementCount * t.dtype.size, "byte count")
        cursor = t.end
    }
    precondition(header.dataStart + cursor == image.count, "buffer end")
    return 0
}
