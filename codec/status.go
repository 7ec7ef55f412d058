package codec

// Status is a J-IM status code carried in the "code" field of replies.
type Status int

// J-IM's status codes (core/ImStatus.java), plus jim's own from 10100 up. The
// numbers and texts of J-IM's codes are exact: clients match on them.
const (
	StatusOK                Status = 10000
	StatusOffline           Status = 10001
	StatusSendFailed        Status = 10002
	StatusGetUserOK         Status = 10003
	StatusGetUserFailed     Status = 10004
	StatusGetOnlineUsersOK  Status = 10005
	StatusGetOfflineUsersOK Status = 10006
	StatusLoginOK           Status = 10007
	StatusLoginFailed       Status = 10008
	StatusAuthOK            Status = 10009
	StatusAuthFailed        Status = 10010
	StatusJoinGroupOK       Status = 10011
	StatusJoinGroupFailed   Status = 10012
	StatusProtocolVersion   Status = 10013
	StatusUnsupportedCmd    Status = 10014
	StatusGetMessageFailed  Status = 10015
	StatusGetOfflineMsgOK   Status = 10016
	StatusUnknownCmd        Status = 10017
	StatusGetHistoryMsgOK   Status = 10018
	StatusOnline            Status = 10019
	StatusInvalidVerify     Status = 10020
	StatusCloseOK           Status = 10021

	// jim's extensions. J-IM clients print the msg of codes they do not know.
	StatusNotLoggedIn  Status = 10100 // a command that needs a login came first
	StatusBusy         Status = 10101 // the server's worker queue is full; retry later
	StatusForbidden    Status = 10102 // the user may not do this (e.g. close another user)
	StatusTooLarge     Status = 10103 // a body over the configured maximum
	StatusRateLimited  Status = 10104 // the connection exceeds its message rate
	StatusStoreFailed  Status = 10105 // the message could not be made durable; not delivered
	StatusLeaveGroupOK Status = 10106 // jim extension: left a group
	StatusUnauthorized Status = 10107 // HTTP API without a valid API key
	StatusNotFound     Status = 10108 // HTTP: no such route
)

var statusMsgs = map[Status]string{
	StatusOK:                "ok 发送成功",
	StatusOffline:           "offline 用户不在线",
	StatusSendFailed:        "send failed 消息发送失败,数据格式不正确,请参考:{'from':来源ID,'to':目标ID,'cmd':'消息命令码','createTime':消息创建时间(Long型),'msgType':Integer消息类型,'content':内容}",
	StatusGetUserOK:         "ok 获取用户信息成功!",
	StatusGetUserFailed:     "get user failed ! 获取用户信息失败!",
	StatusGetOnlineUsersOK:  "ok 获取所有在线用户信息成功!",
	StatusGetOfflineUsersOK: "ok 获取所有离线用户信息成功!",
	StatusLoginOK:           "ok 登录成功!",
	StatusLoginFailed:       "login failed ! 登录失败!",
	StatusAuthOK:            "ok 鉴权成功!",
	StatusAuthFailed:        "auth failed! 鉴权失败!",
	StatusJoinGroupOK:       "join group ok! 加入群组成功!",
	StatusJoinGroupFailed:   "join group failed! 加入群组失败!",
	StatusProtocolVersion:   "Protocol version number does not match 协议版本号不匹配!",
	StatusUnsupportedCmd:    "unsupported cmd command 不支持的cmd命令!",
	StatusGetMessageFailed:  "get user message failed! 获取用户消息失败!",
	StatusGetOfflineMsgOK:   "get user message ok! 获取离线消息成功!",
	StatusUnknownCmd:        "cmd failed! 未知的cmd命令!",
	StatusGetHistoryMsgOK:   "get user message ok! 获取历史消息成功!",
	StatusOnline:            "online 用户在线",
	StatusInvalidVerify:     "Invalid verification! 不合法校验",
	StatusCloseOK:           "close ok! 关闭成功",

	StatusNotLoggedIn:  "not logged in 请先登录",
	StatusBusy:         "server busy 服务器繁忙,请稍后重试",
	StatusForbidden:    "forbidden 无权操作",
	StatusTooLarge:     "too large 消息过大",
	StatusRateLimited:  "rate limited 发送过快",
	StatusStoreFailed:  "store failed 消息保存失败",
	StatusLeaveGroupOK: "leave group ok! 退出群组成功!",
	StatusUnauthorized: "unauthorized 未授权",
	StatusNotFound:     "not found 未找到",
}

// Msg is the text J-IM puts in "msg" for the status: the English description,
// a space, and the Chinese text.
func (s Status) Msg() string {
	if m, ok := statusMsgs[s]; ok {
		return m
	}
	return "error"
}
