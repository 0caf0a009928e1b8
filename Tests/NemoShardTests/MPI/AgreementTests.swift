import Foundation
import XCTest
@testable import NemoShardCore
@testable import NemoShardMPI
@testable import NemoShard

/// Errors cross `agree` typed and unchanged: a caller tells missing experts from a full disk.
final class AgreementTests: XCTestCase {
    func failure(_ body: () throws -> Void) -> JobFailure? {
        do { try SoloCollective().agree(body) } catch let f as JobFailure { return f } catch { XCTFail("not a JobFailure: \(error)") }
        return nil
    }

    func testEachErrorTypeArrivesAsItsOwnCase() throws {
        let checkpoint = failure { throw CheckpointError(path: "/ck/model.safetensors", "Expert weights missing for layer 3") }
        guard case let .checkpoint(e)? = checkpoint?.error else { return XCTFail("\(String(describing: checkpoint))") }
        XCTAssertEqual(e.path, "/ck/model.safetensors")
        XCTAssertEqual(checkpoint?.rank, 0)

        let disk = failure { throw IOError("write", path: "/out/x", code: ENOSPC) }
        guard case let .io(io)? = disk?.error else { return XCTFail("\(String(describing: disk))") }
        XCTAssertEqual(io.code, ENOSPC)
        XCTAssertEqual(io.path, "/out/x")

        let usage = failure { throw UsageError("output directory o exists", remedy: .force) }
        guard case let .usage(u)? = usage?.error else { return XCTFail() }
        XCTAssertEqual(u.remedy, .force)
        XCTAssertTrue(usage?.error.isUsage ?? false)
        XCTAssertFalse(u.description.contains("--"), "library errors name no command-line flag")

        let header = failure { throw SafetensorsError(path: "f", key: "k", .overlap) }
        guard case let .safetensors(s)? = header?.error else { return XCTFail() }
        XCTAssertEqual(s.reason, .overlap)

        struct CallersOwn: Error, CustomStringConvertible { var description: String { "the caller's own" } }
        let other = failure { throw CallersOwn() }
        guard case let .other(type, message)? = other?.error else { return XCTFail() }
        XCTAssertEqual(type, "CallersOwn")
        XCTAssertEqual(message, "the caller's own")
    }

    func testTheWireEncodingKeepsEveryField() throws {
        let errors: [NemoShardError] = [
            .io(IOError("read", path: "/a", code: EIO)), .checkpoint(CheckpointError(path: "/b", "bad")),
            .safetensors(SafetensorsError(path: "/c", key: "t", .rowsOutOfRange(2..<5, shape: [3, 4]))),
            .inputChanged(InputChangedError(path: "/d", "replaced")), .allocation(AllocationError(bytes: 1 << 40, purpose: "x")),
            .output(OutputError(path: "/e", "busy")), .internal(InternalError("bug")), .usage(UsageError("u", remedy: .gather)),
            .peer("stopped"), .other(type: "T", message: "m"),
        ]
        for e in errors {
            let back = try JSONDecoder().decode(NemoShardError.self, from: JSONEncoder().encode(e))
            XCTAssertEqual(back.description, e.description)
            XCTAssertEqual(String(describing: back), String(describing: e))
        }
    }

    func testAnInnerAgreementKeepsItsRankAndAPeerFailureNeverHidesTheCause() {
        let inner = JobFailure(rank: 3, error: .checkpoint(CheckpointError(path: "p", "why")))
        let outer = failure { throw inner }
        XCTAssertEqual(outer?.rank, 3, "the rank that failed, not the one that passed it on")
        let peer = failure { throw PeerFailure("stopped: another rank failed") }
        XCTAssertTrue(peer?.error.isPeer ?? false, "only a peer failure: it is reported")
    }
}

/// The OpenMPI parameters nemoshard sets before `MPI_Init` where the user left them open.
final class MPIDefaultParameterTests: XCTestCase {
    func testRanksWaitYieldingTheirCoreOnlyWhenTheNodeIsOversubscribed() {
        XCTAssertTrue(MPIRuntime.defaultParameters(ranks: 2, cores: 2).isEmpty, "a rank per core: spinning waits are fastest")
        XCTAssertTrue(MPIRuntime.defaultParameters(ranks: 1, cores: 8).isEmpty)
        let over = MPIRuntime.defaultParameters(ranks: 4, cores: 2)
        XCTAssertEqual(over.map(\.name), ["OMPI_MCA_mpi_yield_when_idle"])
        XCTAssertEqual(over.map(\.value), ["1"])
    }
}
