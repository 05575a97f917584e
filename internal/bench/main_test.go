package bench_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/mtlsrelay/mtlsrelay/internal/bench"
)

// workerProcessEnv makes the test binary a worker process of the
// large-bodies mode (bench.WorkerProcessMain) instead of running tests.
const workerProcessEnv = "MTLSRELAY_BENCH_TEST_WORKER_PROCESS"

func TestMain(m *testing.M) {
	if os.Getenv(workerProcessEnv) == "1" {
		if err := bench.WorkerProcessMain(context.Background(), os.Args[1:], os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "worker process:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// testWorkerCommand runs this test binary as a worker process, as `mtlsrelay
// bench` runs itself.
func testWorkerCommand(args []string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), workerProcessEnv+"=1")
	return cmd
}
