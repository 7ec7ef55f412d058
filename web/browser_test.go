package web_test

// End-to-end test of the chat page in headless Chromium: a real jim server in
// process, two browser tabs as two users. `make test-deps` installs Debian's
// chromium when it is missing; `make test` runs it first.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"

	"jim/dispatch"
	"jim/gateway"
	"jim/internal/jimtest"
	"jim/storage"
	"jim/web"
)

// chromiumPath finds the browser: $JIM_CHROMIUM, else chromium on $PATH.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("JIM_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("headless Chromium is needed for the browser tests and was not found (no `chromium` on PATH). " +
		"Run `make test-deps` to install it (Debian package chromium), or set JIM_CHROMIUM to a Chromium binary.")
	return ""
}

// outputDir is where screenshots go: $JIM_TEST_OUTPUT, else testdata/out.
func outputDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("JIM_TEST_OUTPUT")
	if dir == "" {
		dir = filepath.Join("testdata", "out")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// startJim runs gateway+dispatcher on addr over a store that outlives it, so
// a test can restart the server and keep the messages. The caller stops it.
func startJim(t *testing.T, addr string, st storage.Store) *jimtest.Server {
	t.Helper()
	s, err := jimtest.Start(gateway.Options{Addr: addr, Static: web.FS()}, dispatch.Options{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// tab is one browser tab signed in as one user.
type tab struct {
	t    *testing.T
	ctx  context.Context
	name string
	w, h int64
}

func (p *tab) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 15*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("%s: %s: %v", p.name, what, err)
	}
}

// wait polls a JavaScript predicate until it is truthy.
func (p *tab) wait(what, expr string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 15*time.Second)
	defer cancel()
	err := chromedp.Do(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(50*time.Millisecond)))
	if err != nil {
		dctx, dcancel := context.WithTimeout(p.ctx, 3*time.Second)
		defer dcancel()
		state, derr := chromedp.Run(dctx, chromedp.Evaluate[string](`document.getElementById("conn-state").textContent`))
		if derr != nil {
			state = derr.Error()
		}
		p.t.Fatalf("%s: waiting for %s: %v (connection: %s)", p.name, what, err, state)
	}
}

func (p *tab) eval(expr string, out any) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[json.RawMessage](expr))
	if err != nil {
		p.t.Fatalf("%s: eval %s: %v", p.name, expr, err)
	}
	if err := json.Unmarshal(v, out); err != nil {
		p.t.Fatalf("%s: eval %s: %v", p.name, expr, err)
	}
}

func js(s string) string { b, _ := json.Marshal(s); return string(b) }

func (p *tab) open(base string) {
	p.t.Helper()
	p.do("open page",
		chromedp.EmulateViewport(p.w, p.h),
		chromedp.Navigate(base),
		chromedp.WaitVisible(chromedp.CSS("#login-user")),
	)
}

func (p *tab) login(user string) {
	p.t.Helper()
	p.do("sign in",
		chromedp.SendKeys(chromedp.CSS("#login-user"), user),
		chromedp.SendKeys(chromedp.CSS("#login-pass"), "secret"),
		chromedp.Click(chromedp.CSS("#login-btn")),
	)
	p.waitOnline()
}

func (p *tab) waitOnline() {
	p.t.Helper()
	p.wait("connection online", `!document.getElementById("app").hidden && document.getElementById("conn-state").dataset.state === "online"`)
}

// click clicks the element that the CSS selector names.
func (p *tab) click(sel string) {
	p.t.Helper()
	// The page re-renders the conversation list as messages and presence
	// arrive: the node the query found can be replaced before the click
	// reaches it, and the browser then reports "Could not find node with
	// given id" without having clicked. The query is made again.
	for try := 0; ; try++ {
		ctx, cancel := context.WithTimeout(p.ctx, 15*time.Second)
		err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(sel)), chromedp.Click(chromedp.CSS(sel)))
		cancel()
		if err == nil {
			return
		}
		if try < 5 && strings.Contains(err.Error(), "Could not find node") {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		p.t.Fatalf("%s: click %s: %v", p.name, sel, err)
	}
}

func (p *tab) joinGroup(gid string) {
	p.t.Helper()
	p.do("join "+gid, chromedp.SendKeys(chromedp.CSS("#start-input"), gid), chromedp.Click(chromedp.CSS("#join-group")))
	p.wait("group opened", `document.getElementById("chat-title").textContent === `+js("#"+gid))
}

func (p *tab) openConv(key string) {
	p.t.Helper()
	p.click(`#conv-list li[data-key=` + js(key) + `]`)
	p.wait("conversation "+key, `document.getElementById("chat-title").textContent === `+js(strings.Replace(strings.TrimPrefix(key, "u:"), "g:", "#", 1)))
}

// type sends text from the composer and waits for its delivery state.
func (p *tab) send(text, state string) {
	p.t.Helper()
	p.do("type message", chromedp.SendKeys(chromedp.CSS("#composer-input"), text), chromedp.Click(chromedp.CSS("#send-btn")))
	p.waitState(text, state)
}

func (p *tab) waitState(text, state string) {
	p.t.Helper()
	p.wait(fmt.Sprintf("%q %s", text, state), `[...document.querySelectorAll("#msg-list .msg.mine")].some(m =>
		m.querySelector(".bubble").textContent === `+js(text)+` && m.querySelector(".state").dataset.state === `+js(state)+`)`)
}

// waitMsg waits until text is shown in the open conversation.
func (p *tab) waitMsg(text string) {
	p.t.Helper()
	p.wait(fmt.Sprintf("message %q", text), `[...document.querySelectorAll("#msg-list .bubble")].some(b => b.textContent === `+js(text)+`)`)
}

// count returns how often text is shown in the open conversation.
func (p *tab) count(text string) int {
	p.t.Helper()
	var n int
	p.eval(`[...document.querySelectorAll("#msg-list .bubble")].filter(b => b.textContent === `+js(text)+`).length`, &n)
	return n
}

func (p *tab) screenshot(dir, name string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Fatalf("%s: screenshot: %v", p.name, err)
	}
	file := filepath.Join(dir, fmt.Sprintf("%s-%dx%d.png", name, p.w, p.h))
	if err := os.WriteFile(file, png, 0o644); err != nil {
		p.t.Fatal(err)
	}
	p.t.Logf("screenshot %s", file)
}

// wsUser is a plain WebSocket client, for the messages a test needs in bulk.
type wsUser struct {
	t *testing.T
	c *websocket.Conn
}

func dialUser(t *testing.T, addr, user string) *wsUser {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+addr+"/?username="+user+"&password=x", nil)
	if err != nil {
		t.Fatalf("dial %s: %v", user, err)
	}
	c.SetReadLimit(1 << 20)
	u := &wsUser{t: t, c: c}
	u.until(func(m map[string]any) bool { return m["command"] == float64(6) })
	return u
}

func (u *wsUser) send(v any) {
	u.t.Helper()
	b, _ := json.Marshal(v)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := u.c.Write(ctx, websocket.MessageText, b); err != nil {
		u.t.Fatal(err)
	}
}

// until reads messages until match accepts one.
func (u *wsUser) until(match func(map[string]any) bool) map[string]any {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		_, b, err := u.c.Read(ctx)
		if err != nil {
			u.t.Fatalf("read: %v", err)
		}
		var m map[string]any
		if json.Unmarshal(b, &m) == nil && match(m) {
			return m
		}
	}
}

func (u *wsUser) close() { _ = u.c.Close(websocket.StatusNormalClosure, "") }

// groupChat sends n group messages and waits for every ack.
func (u *wsUser) groupChat(gid string, texts ...string) {
	u.t.Helper()
	for _, s := range texts {
		u.send(map[string]any{"cmd": 11, "chatType": 1, "groupId": gid, "msgType": 0, "content": s})
	}
	for range texts {
		m := u.until(func(m map[string]any) bool { return m["command"] == float64(12) })
		if m["code"] != float64(10000) {
			u.t.Fatalf("group chat ack: %v", m)
		}
	}
}

// startBrowser starts a headless Chromium for the test, ended with it
// after at most timeout, and returns what opens a tab in it (each tab its
// own browser context, so its own cookies and storage).
func startBrowser(t *testing.T, chrome string, timeout time.Duration) func(name string, w, h int64) *tab {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chrome),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		// Two tabs run side by side; neither may be throttled as hidden.
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	t.Cleanup(cancelAlloc)
	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx)
	t.Cleanup(cancelBrowser)
	if err := chromedp.Do(browserCtx); err != nil {
		t.Fatalf("starting %s: %v", chrome, err)
	}
	return func(name string, w, h int64) *tab {
		c, cancel := chromedp.NewContext(browserCtx, chromedp.WithNewBrowserContext())
		t.Cleanup(cancel)
		// The tab lives as long as the context of its first action: make
		// that the tab's own context, not a per-step timeout.
		if err := chromedp.Do(c); err != nil {
			t.Fatalf("opening a tab: %v", err)
		}
		// The page must work within the Content-Security-Policy jimd sends
		// with it: anything the policy blocks is reported in the console.
		var mu sync.Mutex
		var blocked []string
		go func() {
			for m, err := range chromedp.Console(c) {
				if err != nil {
					return
				}
				if strings.Contains(m.Text, "Content Security Policy") {
					mu.Lock()
					blocked = append(blocked, m.Text)
					mu.Unlock()
				}
			}
		}()
		t.Cleanup(func() {
			mu.Lock()
			defer mu.Unlock()
			for _, b := range blocked {
				t.Errorf("%s: blocked by the page's policy: %s", name, b)
			}
		})
		return &tab{t: t, ctx: c, name: name, w: w, h: h}
	}
}

func TestBrowserChat(t *testing.T) {
	chrome := chromiumPath(t)
	out := outputDir(t)
	st := storage.NewMemory()
	t.Cleanup(func() { st.Close() })
	addr := jimtest.FreePort(t)
	srv := startJim(t, addr, st)
	t.Cleanup(func() { srv.Stop() })
	base := "http://" + addr + "/"

	newTab := startBrowser(t, chrome, 90*time.Second)
	alice := newTab("alice", 1280, 800) // laptop
	bob := newTab("bob", 390, 844)      // phone

	alice.open(base)
	bob.open(base)
	bob.screenshot(out, "bob-login")
	alice.login("alice")
	bob.login("bob")
	alice.joinGroup("lobby")
	bob.joinGroup("lobby")

	// Presence: alice sees bob online and opens a private chat from there.
	alice.wait("bob online", `!!document.querySelector('#online-list li[data-user="bob"]')`)
	alice.click(`#online-list li[data-user="bob"]`)
	alice.wait("chat with bob", `document.getElementById("chat-title").textContent === "bob"`)

	// Private chat both ways. The markup must arrive as text.
	hello := `Hi Bob <b>bold?</b> & "quotes" <img src=x onerror=alert(1)>`
	alice.send(hello, "sent")
	bob.do("back to list", chromedp.Click(chromedp.CSS("#back-btn")))
	bob.wait("unread from alice", `!!document.querySelector('#conv-list li[data-key="u:alice"] .badge')`)
	bob.openConv("u:alice")
	bob.waitMsg(hello)
	var tags int
	bob.eval(`document.querySelectorAll("#msg-list .bubble *").length`, &tags)
	if tags != 0 {
		t.Fatalf("message markup was rendered as HTML (%d elements in bubbles)", tags)
	}
	bob.send("Hello Alice", "sent")
	alice.waitMsg("Hello Alice")

	// Group chat both ways.
	bob.click("#back-btn")
	bob.openConv("g:lobby")
	alice.openConv("g:lobby")
	alice.send("Hello lobby", "sent")
	bob.waitMsg("Hello lobby")
	bob.wait("sender name", `[...document.querySelectorAll("#msg-list .msg .from")].some(f => f.textContent === "alice")`)
	bob.send("Hi all", "sent")
	alice.waitMsg("Hi all")
	if n := alice.count("Hello lobby"); n != 1 {
		t.Fatalf("alice shows her group message %d times, want 1", n)
	}

	// Offline delivery: bob leaves the page, alice's message is stored.
	bob.do("leave page", chromedp.Navigate("about:blank"))
	alice.wait("bob offline", `!document.querySelector('#online-list li[data-user="bob"]')`)
	alice.openConv("u:bob")
	alice.wait("bob shown offline", `document.getElementById("chat-sub").textContent === "offline"`)
	alice.send("while you were away", "stored")

	// A third user fills the group with more than one page of history.
	carol := dialUser(t, addr, "carol")
	carol.send(map[string]any{"cmd": 7, "groupId": "lobby"})
	carol.until(func(m map[string]any) bool { return m["command"] == float64(9) })
	var bulk []string
	for i := 1; i <= 110; i++ {
		bulk = append(bulk, "bulk "+strconv.Itoa(i))
	}
	carol.groupChat("lobby", bulk...)

	// Bob comes back: the tab signs in again by itself, the offline message
	// arrives, and the private history shows.
	bob.do("come back", chromedp.Navigate(base))
	bob.waitOnline()
	bob.wait("offline message flagged", `!!document.querySelector('#conv-list li[data-key="u:alice"] .badge')`)
	bob.waitMsg("bulk 110") // the group chat was open: it is restored
	bob.click("#back-btn")
	bob.openConv("u:alice")
	bob.waitMsg("while you were away")
	bob.waitMsg(hello)
	bob.waitMsg("Hello Alice")
	if n := bob.count("while you were away"); n != 1 {
		t.Fatalf("bob shows the offline message %d times, want 1", n)
	}
	bob.screenshot(out, "bob-private")

	// Reload: alice's page restores the chat and shows its history; the
	// group has more than a page, so "load older" reaches the start.
	alice.do("reload", chromedp.Reload())
	alice.waitOnline()
	alice.wait("chat restored", `document.getElementById("chat-title").textContent === "bob"`)
	alice.waitMsg(hello)
	alice.waitMsg("Hello Alice")
	alice.waitMsg("while you were away")
	alice.openConv("g:lobby")
	alice.waitMsg("bulk 110")
	alice.wait("load older offered", `!document.getElementById("load-older").hidden`)
	if alice.count("Hello lobby") != 0 {
		t.Fatal("the first page of group history should not reach the oldest message")
	}
	alice.click("#load-older")
	alice.waitMsg("Hello lobby")
	alice.wait("start of history", `!document.getElementById("history-start").hidden && document.getElementById("load-older").hidden`)
	var shown int
	alice.eval(`document.querySelectorAll("#msg-list .msg").length`, &shown)
	if want := 2 + 110; shown != want {
		t.Fatalf("alice shows %d group messages after loading older ones, want %d", shown, want)
	}

	// Server restart: both pages reconnect by themselves. A message typed
	// while down is sent after the reconnect; the gap is filled once.
	carol.close()
	srv.Stop()
	alice.wait("reconnecting", `document.getElementById("conn-state").dataset.state === "reconnecting"`)
	alice.do("type while down", chromedp.SendKeys(chromedp.CSS("#composer-input"), "typed while down"), chromedp.Click(chromedp.CSS("#send-btn")))
	alice.waitState("typed while down", "sending")
	srv = startJim(t, addr, st)
	carol = dialUser(t, addr, "carol")
	carol.groupChat("lobby", "during the gap")
	carol.close()
	alice.waitOnline()
	bob.waitOnline()
	alice.waitState("typed while down", "sent")
	alice.waitMsg("during the gap")
	bob.click("#back-btn")
	bob.openConv("g:lobby")
	bob.waitMsg("typed while down")
	bob.waitMsg("during the gap")
	for _, c := range []struct {
		p    *tab
		text string
	}{{alice, "during the gap"}, {bob, "during the gap"}, {alice, "typed while down"}, {bob, "typed while down"}} {
		if n := c.p.count(c.text); n != 1 {
			t.Fatalf("%s shows %q %d times after the reconnect, want 1", c.p.name, c.text, n)
		}
	}
	alice.click("#members-btn") // every member, with presence (cmd 17 type 2)
	alice.wait("member list", `[...document.querySelectorAll("#member-list li")].map(l => l.textContent).join() === "alice,bob,carol"`)
	alice.wait("carol offline", `!document.querySelector("#member-list li:nth-child(3)").classList.contains("on")`)
	alice.screenshot(out, "alice-group")
	bob.screenshot(out, "bob-group")

	// The phone layout's chat list, and the laptop's private chat.
	bob.click("#back-btn")
	bob.screenshot(out, "bob-list")
	alice.openConv("u:bob")
	alice.screenshot(out, "alice-private")
}

// With replies cut to a few messages by their bytes (the server's
// MaxReplyBytes, set tiny here), "load older" still walks a long group
// history back to its start: a cut page leaves a gap below what the page
// shows, and the next click fills it instead of asking for the same page.
func TestBrowserOlderPagesCutBySize(t *testing.T) {
	chrome := chromiumPath(t)
	addr := jimtest.FreePort(t)
	srv, err := jimtest.Start(gateway.Options{Addr: addr, Static: web.FS()}, dispatch.Options{MaxReplyBytes: 1200})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	carol := dialUser(t, addr, "carol")
	carol.send(map[string]any{"cmd": 7, "groupId": "big"})
	carol.until(func(m map[string]any) bool { return m["command"] == float64(9) })
	const n = 80
	var texts []string
	for i := 1; i <= n; i++ {
		texts = append(texts, "m "+strconv.Itoa(i))
	}
	carol.groupChat("big", texts...)

	alice := startBrowser(t, chrome, 90*time.Second)("alice", 1280, 800)
	alice.open("http://" + addr + "/")
	alice.login("alice")
	alice.joinGroup("big")
	alice.waitMsg("m 80")
	shown := func() int {
		var k int
		alice.eval(`document.querySelectorAll("#msg-list .msg").length`, &k)
		return k
	}
	for clicks := 0; ; clicks++ {
		var atStart bool
		alice.eval(`!document.getElementById("history-start").hidden`, &atStart)
		if atStart {
			break
		}
		if clicks > 3*n {
			t.Fatalf("history start not reached after %d clicks: %d of %d messages shown", clicks, shown(), n)
		}
		before := shown()
		alice.click("#load-older")
		alice.wait("an older page", fmt.Sprintf(`document.querySelectorAll("#msg-list .msg").length > %d || !document.getElementById("history-start").hidden`, before))
	}
	if got := shown(); got != n {
		t.Fatalf("alice shows %d group messages at the start of history, want %d", got, n)
	}
	alice.waitMsg("m 1")
}
