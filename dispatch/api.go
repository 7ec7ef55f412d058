package dispatch

import (
	"crypto/sha256"
	"crypto/subtle"
	"hash/fnv"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"jim/codec"
)

// APIRequest is one HTTP API request as the gateway parsed it.
type APIRequest struct {
	Path     string
	Form     url.Values // query plus urlencoded body
	Body     []byte
	APIKey   string // the X-API-Key header
	Loopback bool   // the peer is 127.0.0.0/8 or ::1
	Origin   string // the Origin header: set by browsers, never by API clients
}

// APIResponse is what the gateway writes back.
type APIResponse struct {
	Status      int
	ContentType string
	Body        []byte
}

const jsonContentType = "application/json; charset=utf-8"

// apiSender is the pseudo-sender of /api/message/send bodies without "from".
const apiSender = "system"

// API serves /api/*. reply is called exactly once, possibly from a worker
// goroutine. Paths and reply shapes follow J-IM 2.x's HttpApiController; jim
// adds /api/user/list and /api/group/members.
//
// Access: with an API key configured, X-API-Key must match it; without one,
// only loopback clients are served, so a fresh install does not expose a
// message-injection endpoint to the network.
func (d *Dispatcher) API(r APIRequest, reply func(APIResponse)) {
	if d.hasAPIKey {
		// Comparing digests keeps the comparison constant-time in the key's
		// length too.
		got := sha256.Sum256([]byte(r.APIKey))
		if subtle.ConstantTimeCompare(got[:], d.apiKeySum[:]) != 1 {
			reply(apiJSON(http.StatusUnauthorized, codec.HTTPStatusResp(codec.StatusUnauthorized)))
			return
		}
	} else if !r.Loopback || r.Origin != "" {
		// Without a key the API trusts loopback. A web page open in a
		// browser on this machine is loopback too, and could post a
		// text/plain body here without any preflight; browsers always say
		// where such a request comes from, API clients never need to.
		reply(apiJSON(http.StatusForbidden, codec.HTTPStatusResp(codec.StatusForbidden)))
		return
	}
	switch r.Path {
	case "/api/message/send":
		d.apiSend(r, reply)
	case "/api/user/online":
		uid := userParam(r.Form)
		switch {
		case !ValidID(uid):
			reply(apiJSON(http.StatusOK, codec.HTTPStatusResp(codec.StatusInvalidVerify)))
		case d.onlineAnywhere(uid):
			reply(apiJSON(http.StatusOK, codec.HTTPStatusResp(codec.StatusOnline)))
		default:
			reply(apiJSON(http.StatusOK, codec.HTTPStatusResp(codec.StatusOffline)))
		}
	case "/api/user/close":
		uid := userParam(r.Form)
		if !ValidID(uid) {
			reply(apiJSON(http.StatusOK, codec.HTTPStatusResp(codec.StatusInvalidVerify)))
			return
		}
		d.kick(uid, nil)
		// Every node is told, not only those presence knows hold the user:
		// a login elsewhere may not have reached this node's view yet.
		d.publish(ClusterMsg{Kind: ClusterKick, Cmd: codec.CmdCloseReq, Target: uid})
		reply(apiJSON(http.StatusOK, codec.HTTPStatusResp(codec.StatusCloseOK)))
	case "/api/user/list":
		// Listing copies and sorts every online id: a worker's job, not
		// the event loop's.
		if !d.pool.trySubmit(apiKey(r.Path), func() { d.apiUserList(r, reply) }) {
			d.m.queueFull.Inc()
			reply(apiJSON(http.StatusServiceUnavailable, codec.HTTPStatusResp(codec.StatusBusy)))
		}
	case "/api/group/members":
		d.apiGroupMembers(r, reply)
	default:
		reply(apiJSON(http.StatusNotFound, codec.HTTPStatusResp(codec.StatusNotFound)))
	}
}

func apiJSON(status int, body []byte) APIResponse {
	return APIResponse{Status: status, ContentType: jsonContentType, Body: body}
}

// userParam reads J-IM's lower-case "userid", or "userId".
func userParam(f url.Values) string {
	if v := f.Get("userid"); v != "" {
		return v
	}
	return f.Get("userId")
}

// apiKey picks the worker for API work that has no connection: by sender, so
// one sender's API messages keep their order.
func apiKey(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

func (d *Dispatcher) apiSend(r APIRequest, reply func(APIResponse)) {
	d.m.inCounter(codec.CmdChatReq).Inc()
	var cb codec.ChatBody
	if err := codec.Unmarshal(r.Body, &cb); err != nil {
		reply(apiJSON(http.StatusOK, codec.StatusResp(codec.CmdChatResp, codec.StatusSendFailed)))
		return
	}
	from := cb.From
	if from == "" {
		from = apiSender
	}
	if !d.pool.trySubmit(apiKey(from), func() {
		d.chat(from, &cb, false, func(resp roomy) { reply(apiJSON(http.StatusOK, resp.json())) })
	}) {
		d.m.queueFull.Inc()
		reply(apiJSON(http.StatusServiceUnavailable, codec.StatusResp(codec.CmdChatResp, codec.StatusBusy)))
	}
}

// pageParams reads offset and count with the history defaults and caps.
func pageParams(f url.Values) (offset, count int) {
	offset, _ = strconv.Atoi(f.Get("offset"))
	count, _ = strconv.Atoi(f.Get("count"))
	if offset < 0 {
		offset = 0
	}
	if count <= 0 {
		count = 100
	}
	if count > 1000 {
		count = 1000
	}
	return offset, count
}

type apiList struct {
	Code codec.Status `json:"code"`
	Data apiListData  `json:"data"`
	Msg  string       `json:"msg"`
}

type apiListData struct {
	GroupID string        `json:"groupId,omitempty"`
	Total   int           `json:"total"`
	Users   []*codec.User `json:"users"`
}

// apiUserList pages through the online users of this node, sorted by id.
func (d *Dispatcher) apiUserList(r APIRequest, reply func(APIResponse)) {
	offset, count := pageParams(r.Form)
	all := d.hub.users()
	out := apiList{Code: codec.StatusGetOnlineUsersOK, Msg: codec.StatusGetOnlineUsersOK.Msg(),
		Data: apiListData{Total: len(all), Users: []*codec.User{}}}
	if offset < len(all) {
		page := all[offset:min(len(all), offset+count)]
		for _, uid := range page {
			out.Data.Users = append(out.Data.Users, d.userView(uid))
		}
	}
	reply(apiJSON(http.StatusOK, d.marshal(&out)))
}

// apiGroupMembers lists a group's members with presence; it reads the store,
// so it runs on a worker.
func (d *Dispatcher) apiGroupMembers(r APIRequest, reply func(APIResponse)) {
	gid := r.Form.Get("groupId")
	if gid == "" {
		gid = r.Form.Get("group_id")
	}
	if !ValidID(gid) {
		reply(apiJSON(http.StatusOK, codec.HTTPStatusResp(codec.StatusInvalidVerify)))
		return
	}
	offset, count := pageParams(r.Form)
	if !d.pool.trySubmit(apiKey(gid), func() {
		members, err := d.store.GroupMembers(d.ctx, gid)
		if err != nil {
			reply(apiJSON(http.StatusInternalServerError, codec.HTTPStatusResp(codec.StatusStoreFailed)))
			return
		}
		slices.Sort(members)
		out := apiList{Code: codec.StatusGetUserOK, Msg: codec.StatusGetUserOK.Msg(),
			Data: apiListData{GroupID: gid, Total: len(members), Users: []*codec.User{}}}
		if offset < len(members) {
			for _, uid := range members[offset:min(len(members), offset+count)] {
				out.Data.Users = append(out.Data.Users, d.userView(uid))
			}
		}
		reply(apiJSON(http.StatusOK, d.marshal(&out)))
	}) {
		d.m.queueFull.Inc()
		reply(apiJSON(http.StatusServiceUnavailable, codec.HTTPStatusResp(codec.StatusBusy)))
	}
}
