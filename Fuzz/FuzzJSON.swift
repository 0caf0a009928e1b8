// libFuzzer target: JSON, config.json, model.safetensors.index.json and nemoshard.json parsers, and
// DCP_SHARDING_INFO with the chunk tiling check and the chunk copy it guards.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJSON(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    _ = try? HFIndex.parse(bytes, path: "index")
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
    if let info = try? DCPShardingInfo.parse(String(decoding: bytes, as: UTF8.self), path: "dcp") {
        fuzzTiling(info)
    }
    if let mesh = try? MeshShape(parsing: String(decoding: bytes.prefix(64), as: UTF8.self)) {
        for r in 0..<min(mesh.worldSize, 64) { _ = mesh.expertRange(of: r, experts: 128) }
    }
    return 0
}

/// Chunks of extent 2 at the fuzzed offsets: when they tile a small global tensor, assembling it
/// must stay inside both buffers.
func fuzzTiling(_ info: [String: [Int]]) {
    let rank = info.values.first?.count ?? 0
    let chunks = info.keys.sorted().compactMap { name -> DCPCheckpoint.Chunk? in
        guard let o = info[name], o.count == rank, rank <= 4 else { return nil }
        return DCPCheckpoint.Chunk(file: name, offsets: o, shape: o.map { _ in 2 }, dataOffset: 0, byteCount: (1 << rank) * 4)
    }
    guard !chunks.isEmpty, let shape = try? ChunkTiling.globalShape(of: chunks, dtype: .f32, tensor: "t", directory: "d"),
          shape.reduce(4, *) <= 1 << 20,
          (try? ChunkTiling.checkTiling(chunks, globalShape: shape, tensor: "t", directory: "d")) != nil else { return }
    var global = [UInt8](repeating: 0, count: shape.reduce(4, *))
    let piece = [UInt8](repeating: 1, count: chunks[0].shape.reduce(4, *))
    global.withUnsafeMutableBytes { g in
        piece.withUnsafeBytes { p in
            for c in chunks { ChunkTiling.place(p, shape: c.shape, offsets: c.offsets, into: g, globalShape: shape, elementSize: 4) }
        }
    }
    precondition(global.allSatisfy { $0 == 1 }, "a tiling leaves no element unwritten")
}
