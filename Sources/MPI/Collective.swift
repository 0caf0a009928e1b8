import NemoShardCore

/// The collective operations the jobs need. `Communicator` runs them over MPI;
/// `SoloCollective` is a world of one without MPI (library callers, `convert`, unit tests).
/// These are the primitives (bytes, 64-bit reductions); every value ranks send each other that
/// is not tensor bytes or a reduction goes through the one encoding, `broadcast`/`allgather` of
/// `Codable` values (WireCoding.swift).
///
/// A library caller gets one from `MPIRuntime.start()` (under a launcher) or makes a
/// `SoloCollective`; the jobs need nothing else from MPI.
public protocol Collective: AnyObject {
    var rank: Int { get }
    var size: Int { get }
    func barrier() throws
    /// A barrier whose waiting ranks sleep rather than spin.
    func quietBarrier() throws
    func broadcast(_ bytes: [UInt8], root: Int) throws -> [UInt8]
    func allreduce(_ values: [Int64], _ op: ReduceOp) throws -> [Int64]
    func allgather(_ values: [Int64]) throws -> [Int64]
    func allgatherBytes(_ bytes: [UInt8]) throws -> [[UInt8]]
    func send(_ bytes: UnsafeRawBufferPointer, to dest: Int, tag: Int) throws
    func receive(from source: Int, tag: Int) throws -> [UInt8]
    /// Sends `count` bytes that `produce` fills span by span, in pieces the receiver takes one at a
    /// time (`receiveStream`); if `produce` throws, the receiver learns the stream was abandoned.
    func sendStream(count: Int, to dest: Int, tag: Int, produce: (OutgoingStream) throws -> Void) throws
    /// Receives a `sendStream`, piece by piece: `body(piece, offset)`; returns the total.
    @discardableResult
    func receiveStream(from source: Int, tag: Int, _ body: (UnsafeRawBufferPointer, Int) throws -> Void) throws -> Int
    func split(color: Int, key: Int) throws -> Collective
    /// The ranks on this rank's node (its rank 0 leads the node).
    func nodeGroup() throws -> Collective
}

/// How `allreduce` combines the ranks' values, element by element.
public enum ReduceOp: Sendable { case sum, max, min }

extension Communicator: Collective {
    package func split(color: Int, key: Int) throws -> Collective { try split(color: color, key: key) as Communicator }
    package func nodeGroup() throws -> Collective { try splitByNode() }
}

/// A world of one process.
public final class SoloCollective: Collective {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public func barrier() throws {}
    public func quietBarrier() throws {}
    public func broadcast(_ bytes: [UInt8], root: Int) throws -> [UInt8] { bytes }
    public func allreduce(_ values: [Int64], _ op: ReduceOp) throws -> [Int64] { values }
    public func allgather(_ values: [Int64]) throws -> [Int64] { values }
    public func allgatherBytes(_ bytes: [UInt8]) throws -> [[UInt8]] { [bytes] }
    public func send(_ bytes: UnsafeRawBufferPointer, to dest: Int, tag: Int) throws {
        throw UsageError("send in a world of one")
    }
    public func receive(from source: Int, tag: Int) throws -> [UInt8] { throw UsageError("receive in a world of one") }
    public func sendStream(count: Int, to dest: Int, tag: Int, produce: (OutgoingStream) throws -> Void) throws {
        throw UsageError("send in a world of one")
    }
    public func receiveStream(from source: Int, tag: Int, _ body: (UnsafeRawBufferPointer, Int) throws -> Void) throws -> Int {
        throw UsageError("receive in a world of one")
    }
    public func split(color: Int, key: Int) throws -> Collective { self }
    public func nodeGroup() throws -> Collective { self }
}

extension Collective {
    package func allreduce(_ value: Int64, _ op: ReduceOp) throws -> Int64 { try allreduce([value], op)[0] }
}
