// Command jimbench is jim's load generator. Run "jimbench -h" for the flags;
// the bench package documents the scenarios and what is measured.
//
// JIMBENCH_CPUPROFILE=FILE writes a CPU profile of the run (of the main
// process; worker processes add their pid to the name), to check that
// jimbench is not what limits a measurement.
package main

import (
	"fmt"
	"os"
	"runtime/pprof"
	"strings"

	"jim/bench"
)

func main() {
	os.Exit(run())
}

func run() int {
	if name := os.Getenv("JIMBENCH_CPUPROFILE"); name != "" {
		for _, a := range os.Args[1:] {
			if strings.TrimLeft(a, "-") == "worker" {
				name = fmt.Sprintf("%s.%d", name, os.Getpid())
			}
		}
		f, err := os.Create(name)
		if err != nil {
			fmt.Fprintln(os.Stderr, "jimbench:", err)
			return 2
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "jimbench:", err)
			return 2
		}
		defer pprof.StopCPUProfile()
	}
	return bench.Main(os.Args[1:], os.Stdout, os.Stderr)
}
