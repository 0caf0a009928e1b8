import Foundation

/// What the program that started this process (mpirun, srun, mpiexec) says about the job, read
/// from the environment it sets. The one place launcher variables are read: the command-line
/// tool's rank-0-only error lines, its refusal to run a single-process command as many ranks,
/// its default thread count and MPI start-up all ask here.
///
/// Launchers are recognised in this order (the first whose variables are set wins, since several
/// set more than their own: OpenMPI also sets `PMIX_RANK`, `srun --mpi=pmix` or `--mpi=pmi2` also
/// sets `PMIX_RANK` or `PMI_*`):
///
/// | launcher                | rank                   | size                                    | ranks on this node |
/// |-------------------------|------------------------|-----------------------------------------|--------------------|
/// | OpenMPI mpirun / prterun| `OMPI_COMM_WORLD_RANK` | `OMPI_COMM_WORLD_SIZE`                  | `OMPI_COMM_WORLD_LOCAL_SIZE` |
/// | PMIx                    | `PMIX_RANK`            | `PMIX_SIZE` or `PMI_SIZE`, else Slurm's | Slurm's            |
/// | Hydra / MPICH PMI       | `PMI_RANK`             | `PMI_SIZE`, else Slurm's                | `MPI_LOCALNRANKS`, else Slurm's |
/// | Slurm `srun`            | `SLURM_PROCID`         | `SLURM_STEP_NUM_TASKS`, `SLURM_NTASKS`  | `SLURM_STEP_TASKS_PER_NODE`, `SLURM_TASKS_PER_NODE` (this node's entry), `SLURM_NTASKS_PER_NODE` |
///
/// Slurm counts only inside a job step (`SLURM_STEP_ID` or `SLURM_STEPID` set, as `srun` does):
/// an `sbatch` script itself also sees `SLURM_PROCID=0` and the allocation's `SLURM_NTASKS`, but
/// a command run directly from it is one process. A launcher that names a rank but no size
/// reports `rank + 1` ranks (as many as it must have). Values that are not numbers are ignored.
package struct Launcher: Equatable, Sendable {
    /// The program that started the process.
    package enum Kind: String, Equatable, Sendable {
        case openMPI = "OpenMPI"
        case hydra = "Hydra/PMI"
        case pmix = "PMIx"
        case slurm = "Slurm srun"
    }

    /// Which launcher started this process; nil when none did (a world of one).
    package let kind: Kind?
    /// This process's rank in the job's world (0 without a launcher).
    package let rank: Int
    /// Ranks in the job's world (1 without a launcher).
    package let size: Int
    /// Ranks of the job on this process's node (1 when the launcher does not say).
    package let localSize: Int

    /// Whether a launcher started this process.
    package var isLaunched: Bool { kind != nil }

    /// This process's launcher, read once from its environment.
    package static let current = Launcher()

    /// Reads `environment` (by default this process's).
    package init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        let env = Variables(environment)
        let step = SlurmStep(env)
        if env.has("OMPI_COMM_WORLD_RANK") || env.has("OMPI_COMM_WORLD_SIZE") {
            self.init(.openMPI, rank: env.int("OMPI_COMM_WORLD_RANK") ?? 0, size: env.int("OMPI_COMM_WORLD_SIZE"),
                      localSize: env.int("OMPI_COMM_WORLD_LOCAL_SIZE"))
        } else if env.has("PMIX_RANK") {
            self.init(.pmix, rank: env.int("PMIX_RANK") ?? 0, size: env.int("PMIX_SIZE") ?? env.int("PMI_SIZE") ?? step?.size,
                      localSize: step?.localSize)
        } else if env.has("PMI_RANK") || env.has("PMI_SIZE") {
            self.init(.hydra, rank: env.int("PMI_RANK") ?? 0, size: env.int("PMI_SIZE") ?? step?.size,
                      localSize: env.int("MPI_LOCALNRANKS") ?? step?.localSize)
        } else if let step {
            self.init(.slurm, rank: step.rank, size: step.size, localSize: step.localSize)
        } else {
            self.init(nil, rank: 0, size: 1, localSize: 1)
        }
    }

    /// Clamps what the launcher said: rank at least 0, size above rank, local size at least 1.
    private init(_ kind: Kind?, rank: Int, size: Int?, localSize: Int?) {
        self.kind = kind
        self.rank = max(rank, 0)
        self.size = max(size ?? 1, self.rank + 1)
        self.localSize = max(localSize ?? 1, 1)
    }
}

/// The environment as integers.
private struct Variables {
    let values: [String: String]

    init(_ values: [String: String]) { self.values = values }

    func has(_ name: String) -> Bool { values[name] != nil }

    /// The variable as a decimal integer; nil when unset or not a number.
    func int(_ name: String) -> Int? {
        values[name].flatMap { Int($0.trimmingCharacters(in: .whitespaces)) }
    }
}

/// An `srun` job step: the task's rank, the step's task count and the tasks on this node.
private struct SlurmStep {
    let rank: Int
    let size: Int?
    let localSize: Int?

    init?(_ env: Variables) {
        guard let rank = env.int("SLURM_PROCID"), env.has("SLURM_STEP_ID") || env.has("SLURM_STEPID") else { return nil }
        self.rank = rank
        size = env.int("SLURM_STEP_NUM_TASKS") ?? env.int("SLURM_NTASKS")
        let node = max(env.int("SLURM_NODEID") ?? 0, 0)
        localSize = ["SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"].lazy
            .compactMap { env.values[$0].flatMap { SlurmStep.tasks(onNode: node, of: $0) } }.first
            ?? env.int("SLURM_NTASKS_PER_NODE")
    }

    /// Entry `node` of a Slurm tasks-per-node list such as `2(x3),1` (nodes 0-2 run 2 tasks,
    /// node 3 runs 1); nil when the list is malformed or shorter.
    static func tasks(onNode node: Int, of list: String) -> Int? {
        var seen = 0
        for item in list.split(separator: ",") {
            var count = Substring(item)
            var repeats = 1
            if let open = item.firstIndex(of: "("), item.hasSuffix(")") {
                count = item[..<open]
                let inner = item[item.index(after: open)..<item.index(before: item.endIndex)]
                guard inner.hasPrefix("x"), let r = Int(inner.dropFirst()), r > 0 else { return nil }
                repeats = r
            }
            guard let n = Int(count) else { return nil }
            if node < seen + repeats { return n }
            seen += repeats
        }
        return nil
    }
}
