package crash

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"jim/codec"
	"jim/internal/jimtest"
)

// An online backup from the admin listener, restored with jimd -restore
// into a new directory, starts a jimd that holds every message acknowledged
// before the backup, and nothing written after it.
func TestBackupRestore(t *testing.T) {
	bin := jimtest.BuildJimd(t)
	admin := jimtest.FreePort(t)
	j := jimtest.StartJimd(t, bin, "jimd", "-data", filepath.Join(t.TempDir(), "data"), "-log-level", "warn",
		"-admin-addr", admin)
	send := func(from string, n int, prefix string) {
		t.Helper()
		c, err := dial(j.Addr, from)
		if err != nil {
			t.Fatal(err)
		}
		defer c.c.Close()
		for i := range n {
			if err := c.send(codec.CmdChatReq, fmt.Sprintf(`{"cmd":11,"chatType":2,"to":%q,"content":"%s%d"}`, recipient, prefix, i)); err != nil {
				t.Fatal(err)
			}
		}
		for acked := 0; acked < n; {
			f, err := c.read()
			if err != nil {
				t.Fatal(err)
			}
			if f.Cmd == codec.CmdChatResp {
				acked++
			}
		}
	}
	send("s1", 300, "before")

	resp, err := http.Get("http://" + admin + "/backup")
	if err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(t.TempDir(), "jim.backup")
	f, err := os.Create(backup)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, resp.Body); err != nil || resp.StatusCode != 200 {
		t.Fatalf("backup: HTTP %d, %v", resp.StatusCode, err)
	}
	resp.Body.Close()
	f.Close()
	send("s1", 5, "after")
	j.Stop()

	restored := filepath.Join(t.TempDir(), "restored")
	if out, err := exec.Command(bin, "-restore", backup, "-data", restored).CombinedOutput(); err != nil {
		t.Fatalf("jimd -restore: %v\n%s", err, out)
	}
	// A second restore into the same directory is refused.
	if out, err := exec.Command(bin, "-restore", backup, "-data", restored).CombinedOutput(); err == nil {
		t.Fatalf("a restore over a data directory succeeded:\n%s", out)
	}
	j2 := startJimd(t, bin, restored)
	h := history(t, j2.Addr, "s1")
	if len(h) != 300 {
		t.Fatalf("restored history holds %d messages, want the 300 sent before the backup", len(h))
	}
	for i, m := range h {
		if m.Content != fmt.Sprint("before", i) || m.Seq != uint64(i+1) {
			t.Fatalf("restored message %d: %q seq %d", i, m.Content, m.Seq)
		}
	}
}
