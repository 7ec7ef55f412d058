//go:build linux

package storage

import (
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// BenchmarkLogSync measures what one commit's sync costs on the disk under
// the data directory, the way Badger syncs its memtable log: 8 KiB written
// into a 128 MiB shared mapping, then msync of the whole mapping, until
// 64 MiB are written (one iteration). It reports the sync's p50 over the
// first 24 MiB and past 48 MiB, for a log created sparse (as Badger does),
// reserved with fallocate, or written with zeros first. Run it with
// -benchtime 1x in a directory on the disk in question (JIM_SYNC_DIR,
// default the test's temporary directory); ns/op means nothing here.
func BenchmarkLogSync(b *testing.B) {
	for _, mode := range []string{"sparse", "fallocate", "zeroed"} {
		b.Run(mode, func(b *testing.B) {
			dir := os.Getenv("JIM_SYNC_DIR")
			if dir == "" {
				dir = b.TempDir()
			}
			var early, late []time.Duration
			for range b.N {
				e, l := logSyncRun(b, filepath.Join(dir, "logsync.bench"), mode)
				early, late = append(early, e...), append(late, l...)
			}
			p50 := func(d []time.Duration) float64 {
				slices.Sort(d)
				return float64(d[len(d)/2].Microseconds())
			}
			b.ReportMetric(p50(early), "early-p50-us")
			b.ReportMetric(p50(late), "late-p50-us")
		})
	}
}

func logSyncRun(b *testing.B, path, mode string) (early, late []time.Duration) {
	const size, fill, step = 128 << 20, 64 << 20, 8 << 10
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer os.Remove(path)
	defer f.Close()
	switch mode {
	case "zeroed":
		zero := make([]byte, 1<<20)
		for off := 0; off < size; off += len(zero) {
			if _, err := f.Write(zero); err != nil {
				b.Fatal(err)
			}
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	case "fallocate":
		if err := syscall.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
			b.Fatalf("fallocate (is it supported by this file system?): %v", err)
		}
	default:
		if err := f.Truncate(size); err != nil {
			b.Fatal(err)
		}
	}
	m, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		b.Fatal(err)
	}
	defer syscall.Munmap(m)
	for off := 0; off < fill; off += step {
		for i := off; i < off+step; i++ {
			m[i] = byte(i) | 1
		}
		t := time.Now()
		if _, _, errno := syscall.Syscall(syscall.SYS_MSYNC, uintptr(unsafe.Pointer(&m[0])), size, syscall.MS_SYNC); errno != 0 {
			b.Fatal(errno)
		}
		d := time.Since(t)
		switch {
		case off < 24<<20:
			early = append(early, d)
		case off >= 48<<20:
			late = append(late, d)
		}
	}
	return early, late
}
