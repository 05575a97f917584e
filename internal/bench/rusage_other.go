//go:build !unix

package bench

import (
	"os"
	"time"
)

// cpuTime is not measured on this platform.
func cpuTime() time.Duration { return 0 }

// maxRSSOf is not measured on this platform.
func maxRSSOf(*os.ProcessState) int64 { return 0 }
