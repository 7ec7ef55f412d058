package jimtest

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

var build struct {
	once sync.Once
	bin  string
	out  []byte
	err  error
}

// BuildJimd builds cmd/jimd into a temporary directory, once per test binary,
// and returns the path of the binary.
func BuildJimd(t testing.TB) string {
	t.Helper()
	build.once.Do(func() {
		dir, err := os.MkdirTemp("", "jimd-test-")
		if err != nil {
			build.err = err
			return
		}
		build.bin = filepath.Join(dir, "jimd")
		build.out, build.err = exec.Command("go", "build", "-o", build.bin, "jim/cmd/jimd").CombinedOutput()
	})
	if build.err != nil {
		t.Fatalf("go build: %v\n%s", build.err, build.out)
	}
	return build.bin
}

// Jimd is a jimd child process.
type Jimd struct {
	Addr string // where it listens
	Log  string // the file with its standard output and error

	cmd  *exec.Cmd
	done chan struct{}
}

// StartJimd starts bin with "-addr" set to a free loopback port and then
// args, with JIM_CONFIG unset so that no stray config is read, and waits until
// it accepts connections. A port taken between probing and binding is
// retried. name names its log file and the messages. When the test ends it is
// stopped with Stop.
func StartJimd(t testing.TB, bin, name string, args ...string) *Jimd {
	t.Helper()
	for attempt := 0; attempt < 5; attempt++ {
		addr := FreePort(t)
		logName := filepath.Join(t.TempDir(), name+".log")
		logf, err := os.Create(logName)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, append([]string{"-addr", addr}, args...)...)
		cmd.Env = append(os.Environ(), "JIM_CONFIG=")
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			logf.Close()
			t.Fatal(err)
		}
		j := &Jimd{Addr: addr, Log: logName, cmd: cmd, done: make(chan struct{})}
		go func() { cmd.Wait(); logf.Close(); close(j.done) }()
		t.Cleanup(j.Stop)
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			select {
			case <-j.done:
				out, _ := os.ReadFile(logName)
				t.Logf("jimd %s exited at start (attempt %d): %s", name, attempt+1, out)
				deadline = time.Time{}
				continue
			default:
			}
			if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
				c.Close()
				return j
			}
			time.Sleep(20 * time.Millisecond)
		}
		j.Kill(t)
	}
	t.Fatalf("jimd %s did not start", name)
	return nil
}

// Kill sends SIGKILL and waits until the process is gone.
func (j *Jimd) Kill(t testing.TB) {
	t.Helper()
	select {
	case <-j.done:
		return
	default:
	}
	_ = j.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-j.done:
	case <-time.After(10 * time.Second):
		t.Fatal("jimd did not die after SIGKILL")
	}
}

// Signal sends sig to the process.
func (j *Jimd) Signal(sig os.Signal) error { return j.cmd.Process.Signal(sig) }

// Done is closed when the process has exited.
func (j *Jimd) Done() <-chan struct{} { return j.done }

// ExitCode is the process's exit code once Done is closed (-1 when a
// signal ended it).
func (j *Jimd) ExitCode() int { return j.cmd.ProcessState.ExitCode() }

// Stop sends SIGTERM and waits until the process is gone, killing it when it
// takes longer than 15 s.
func (j *Jimd) Stop() {
	select {
	case <-j.done:
		return
	default:
	}
	_ = j.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-j.done:
	case <-time.After(15 * time.Second):
		_ = j.cmd.Process.Kill()
		<-j.done
	}
}
