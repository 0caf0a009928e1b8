import CKernels
import NemoShardCore
import NemoShardFormat
import NemoShardModel

/// Runs one dequantizing piece: reads its scales (`weight_scale`, and `weight_scale_2` for
/// NVFP4) from their files into the worker's scratch, then the C kernel turns the quantized
/// weight at `src` into floats at `dst` (row-major, or transposed for an expert), in f32 and
/// rounded once to the destination dtype.
package enum Dequantizer {
    /// Dequantizes `d` from `src` (the weight's `sourceBytes` bytes, possibly a mapped window of
    /// its file) into `dst`.
    package static func run(_ d: Dequantization, src: UnsafeRawPointer, sourceBytes: Int, dst: UnsafeMutableRawPointer,
                            files: SourceFiles, scratch: ScratchBuffer) throws {
        guard let kind = d.to.kernelKind else { throw InternalError("cannot dequantize into \(d.to.rawValue)") }
        // The kernel reads exactly these many bytes of each: a plan that disagrees is a bug.
        let scaleBytes = d.format == .fp8 ? 4 : d.rows * d.cols / 16
        guard sourceBytes == d.weightBytes, d.scales.count == scaleBytes, d.format == .fp8 || d.cols % 16 == 0 else {
            throw InternalError("a \(d.format.rawValue) piece of \(d.rows) x \(d.cols) reads \(sourceBytes) weight and \(d.scales.count) scale bytes")
        }
        let global = try d.globalScale.map { try scalar($0, files: files, scratch: scratch) }
        let transpose: Int32 = d.transpose ? 1 : 0
        let rc: Int32
        switch d.format {
        case .fp8:
            let scale = try scalar(d.scales, files: files, scratch: scratch)
            rc = ns_guarded_dequantize_fp8(src, scale, dst, kind, d.rows, d.cols, transpose)
        case .nvfp4:
            guard let global else { throw InternalError("an NVFP4 piece without weight_scale_2") }
            let blocks = try read(d.scales, files: files, into: try scratch.auxiliary(count: d.scales.count))
            rc = ns_guarded_dequantize_nvfp4(src, blocks, global, dst, kind, d.rows, d.cols, transpose)
        }
        if rc == Int32(NS_SOURCE_FAULT) { throw MappedSource.Fault() }
        guard rc == 0 else { throw InternalError("the \(d.format.rawValue) kernel refused \(d.rows) x \(d.cols) into \(d.to.rawValue)") }
    }

    /// One F32 scale (a per-tensor `weight_scale` or `weight_scale_2`).
    private static func scalar(_ r: SourceRange, files: SourceFiles, scratch: ScratchBuffer) throws -> Float {
        guard r.count == 4 else { throw InternalError("a per-tensor scale of \(r.count) bytes") }
        var bits: UInt32 = 0
        try withUnsafeMutableBytes(of: &bits) { b in
            guard let base = b.baseAddress else { return }
            _ = try read(r, files: files, into: base)
        }
        return Float(bitPattern: UInt32(littleEndian: bits))
    }

    /// Reads `r` into `buffer` (`pread`; a changed file is named as such).
    private static func read(_ r: SourceRange, files: SourceFiles, into buffer: UnsafeMutableRawPointer) throws -> UnsafeRawPointer {
        let file = try files.file(r.file)
        do {
            try file.read(into: UnsafeMutableRawBufferPointer(start: buffer, count: r.count), at: r.offset)
        } catch {
            throw MappedSource.explain(error, reading: file, expected: files.fingerprint(r.file))
        }
        return UnsafeRawPointer(buffer)
    }
}
