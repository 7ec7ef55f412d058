package crash

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"jim/codec"
	"jim/internal/jimtest"
)

// A shutdown that cannot finish must not keep jimd running: with its data
// directory gone, Badger retries flushing its memtable for ever and its
// Close with it. A second SIGTERM ends the process at once (a watchdog ends
// it after -shutdown-grace plus 30 s without one).
func TestSecondSignalEndsHungShutdown(t *testing.T) {
	bin := jimtest.BuildJimd(t)
	dir := filepath.Join(t.TempDir(), "data")
	j := startJimd(t, bin, dir)
	c, err := dial(j.Addr, "u1")
	if err != nil {
		t.Fatal(err)
	}
	// Something in the memtable, so that closing the store has to flush.
	if err := c.send(codec.CmdChatReq, `{"cmd":11,"chatType":2,"to":"u2","content":"hi"}`); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := c.read()
		if err != nil {
			t.Fatal(err)
		}
		if f.Cmd == codec.CmdChatResp {
			break
		}
	}
	c.c.Close()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := j.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-j.Done():
		// Badger no longer hangs here: this test then needs another way
		// to hold a shutdown up.
		t.Fatal("the shutdown finished without its data directory: nothing hung for a second signal to end")
	case <-time.After(2 * time.Second):
	}
	start := time.Now()
	if err := j.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-j.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("jimd still running 5 s after a second SIGTERM")
	}
	out, _ := os.ReadFile(j.Log)
	if j.ExitCode() != 1 || !strings.Contains(string(out), "second signal during shutdown") {
		t.Fatalf("exit code %d after %v; log:\n%s", j.ExitCode(), time.Since(start), out)
	}
}
