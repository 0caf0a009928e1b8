import CMPI
import Glibc
import NemoShardCore

/// Process-wide MPI start and stop. Without `mpirun` the process is a world of one.
public enum MPIRuntime {
    nonisolated(unsafe) private static var started = false

    /// Largest single transfer; bigger messages are split. `NEMOSHARD_MPI_CHUNK` overrides it (tests).
    nonisolated(unsafe) package static var maxChunk: Int = {
        if let s = getenv("NEMOSHARD_MPI_CHUNK"), let n = Int(String(cString: s)), n > 0 { return min(n, Int(Int32.max)) }
        return 1 << 30
    }()

    /// Initialises MPI (thread level FUNNELED) once and returns the world: every rank the launcher
    /// (`mpirun`, `srun`) started, or a world of one without a launcher. Call `stop()` when done.
    @discardableResult
    public static func start() throws -> any Collective { try startCommunicator() }

    /// `start()`, as the MPI communicator itself (the layers above and the tests).
    @discardableResult
    package static func startCommunicator() throws -> Communicator {
        if !started {
            var initialized: Int32 = 0
            MPI_Initialized(&initialized)
            if initialized == 0 {
                MPIRuntime.setDefaultParameters()
                var provided: Int32 = 0
                try MPIError.check(MPI_Init_thread(nil, nil, cmpi_thread_funneled(), &provided), "MPI_Init_thread")
            }
            MPI_Comm_set_errhandler(cmpi_comm_world(), cmpi_errors_return())
            started = true
        }
        return Communicator(handle: cmpi_comm_world(), owned: false)
    }

    /// OpenMPI parameters nemoshard runs best with on a node of `cores` cores running `ranks` of the
    /// job's ranks; `start()` sets each only where the user's environment (`OMPI_MCA_*`, which
    /// mpirun's `--mca` also sets) leaves it open:
    /// - `mpi_yield_when_idle=1` when the node runs more ranks than it has cores: a rank waiting
    ///   in a blocking call then yields its core instead of spinning through its time slice.
    ///   OpenMPI does this by itself only when its own slot count says the node is
    ///   oversubscribed; with a hostfile that gives a node more slots than cores, every collective
    ///   took 12-50 ms instead of 0.1 ms (8 ranks, two nodes sharing 2 cores: scripts/nodes).
    package static func defaultParameters(ranks: Int, cores: Int) -> [(name: String, value: String)] {
        ranks > cores ? [("OMPI_MCA_mpi_yield_when_idle", "1")] : []
    }

    private static func setDefaultParameters() {
        let cores = max(sysconf(Int32(_SC_NPROCESSORS_ONLN)), 1)
        for p in defaultParameters(ranks: Launcher.current.localSize, cores: cores) { setenv(p.name, p.value, 0) }
    }

    /// Whether `start()` has run and `stop()` has not.
    package static var isStarted: Bool { started }

    /// Waits for every rank (if MPI is running), e.g. so rank 0 can print an error before mpirun
    /// sees another rank's non-zero exit and ends the job.
    package static func barrierIfStarted() {
        guard started else { return }
        MPI_Barrier(cmpi_comm_world())
    }

    /// Finalises MPI if this process started it (after which MPI cannot be started again).
    public static func stop() {
        guard started else { return }
        var finalized: Int32 = 0
        MPI_Finalized(&finalized)
        if finalized == 0 { MPI_Finalize() }
        started = false
    }

    /// Whether a launcher (mpirun, srun, mpiexec) started this process; see `Launcher`.
    package static var launchedByMPIRun: Bool { Launcher.current.isLaunched }
}
