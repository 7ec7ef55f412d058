// Command jimplot draws PNG charts from jimbench -json result files:
//
//	jimplot -out docs/img [-subtitle TEXT] RESULT.json...
//
// It writes latency-cdf-chat.png, latency-cdf-group.png, group-fanout.png,
// chat-rate.png and idle-memory.png, each only when the results hold the
// runs it needs, and prints the paths written. See the charts package.
package main

import (
	"flag"
	"fmt"
	"os"

	"jim/bench/charts"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("jimplot", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: jimplot -out DIR [flags] RESULT.json...")
		fs.PrintDefaults()
	}
	out := fs.String("out", "docs/img", "directory to write the PNGs into")
	var o charts.Options
	fs.IntVar(&o.Width, "width", 1000, "image width in pixels")
	fs.IntVar(&o.Height, "height", 640, "image height in pixels")
	fs.StringVar(&o.Subtitle, "subtitle", "", "line printed under every chart title (store, machine, date)")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "jimplot: no result files given")
		return 2
	}
	runs, err := charts.Load(fs.Args()...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "jimplot:", err)
		return 1
	}
	paths, err := charts.WriteAll(runs, *out, o)
	for _, p := range paths {
		fmt.Println(p)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "jimplot:", err)
		return 1
	}
	return 0
}
