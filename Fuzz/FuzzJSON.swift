// libFuzzer target: JSON, config.json, model.safetensors.index.json and nemoshard.json parsers.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJSON(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    _ = try? HFCheckpoint.parseIndex(bytes, path: "index")
    guard let json = try? JSON.parse(bytes) else { return 0 }
    precondition((try? JSON.parse(json.serialized())) == json, "serialise/parse round trip")
    if let config = try? NemotronConfig(json: json, path: "config") {
        precondition(config.layers.count == config.numHiddenLayers)
        _ = NemotronV3Adapter(config: config)
    }
    if let m = try? Manifest(json: json, path: "manifest") {
        for r in 0..<m.worldSize { _ = m.mesh.expertRange(of: r, experts: m.nRoutedExperts) }
        _ = m.toJSON().serialized()
    }
    if let mesh = try? MeshShape(parsing: String(decoding: bytes.prefix(64), as: UTF8.self)) {
        for r in 0..<min(mesh.worldSize, 64) { _ = mesh.expertRange(of: r, experts: 128) }
    }
    return 0
}
