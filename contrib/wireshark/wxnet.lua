-- wxnet.lua: Wireshark dissectors for WeChat's long link (S32 packets) and MMTLS record
-- heads, as wxnet implements and analyses them (docs/protocol.md, docs/analyze.md).
--
-- * "wxnet": the 16-byte long-link packet head of S32, big-endian:
--     u32 total length (head included), u16 head length (16), u16 version (1),
--     u32 cmd, u32 seq, then the body (protobuf, not decoded here).
--   Several packets in one TCP segment and packets split across segments are handled
--   (TCP reassembly: Edit > Preferences > Protocols > TCP > "Allow subdissector to
--   reassemble TCP streams", on by default).
-- * "mmtls": MMTLS record heads: u8 record type (0x15 alert, 0x16 handshake,
--   0x17 application data, 0x19 early data), u16 version (0xf103 / 0xf104), u16 length.
--
-- Both are tried first on TCP ports 80, 8080 and 443 (Wireshark's own HTTP and TLS
-- dissectors would otherwise take those ports and show the long link as HTTP, S33);
-- data that is neither goes on to the dissector that had the port before. They are also
-- registered as heuristic TCP dissectors limited to those ports.
--
-- Install: copy this file to ~/.local/lib/wireshark/plugins/ (Wireshark 4.x; see
-- Help > About > Folders > Personal Lua Plugins), or run
--   tshark -X lua_script:contrib/wireshark/wxnet.lua -r capture.pcapng
-- Filter fields: wxnet.len, wxnet.header_len, wxnet.version, wxnet.cmd, wxnet.cmd_name,
-- wxnet.seq, wxnet.body; mmtls.type, mmtls.version, mmtls.length.

local PORTS = { 80, 8080, 443 }
local REPLY = 1000000000
local MAX_PACKET = 1048576 -- wxnet and Mars reject long-link packets above 1 MiB

-- Command names (docs/protocol.md "Command table"); a reply is cmd + 1000000000.
local COMMANDS = {
    [253] = "manualauth",
    [282] = "logout",
    [302] = "getprofile",
    [27] = "newinit",
    [121] = "newsync",
    [1000000190] = "syncdone",
    [247] = "newsynccheck",
    [205] = "identify",
    [522] = "newsendmsg",
    [251] = "statusnotify",
    [594] = "revokemsg",
    [137] = "verifyuser",
    [182] = "getcontact",
    [37] = "createchatroom",
    [120] = "modchatroom",
    [9] = "uploadmsgimg",
    [109] = "getmsgimg",
    [19] = "uploadvoice",
    [20] = "downloadvoice",
    [220] = "uploadappattach",
    [221] = "downloadappattach",
    [149] = "uploadvideo",
    [150] = "downloadvideo",
    [233] = "scanqrcode",
    [681] = "oplog",
}
local SPECIAL = {
    [6] = "noop",
    [1000000006] = "noop reply",
    [24] = "notify",
    [1000000000] = "protocol error",
}

local function cmd_name(cmd)
    if SPECIAL[cmd] then return SPECIAL[cmd] end
    if COMMANDS[cmd] then return COMMANDS[cmd] end
    if cmd >= REPLY and COMMANDS[cmd - REPLY] then return COMMANDS[cmd - REPLY] .. " reply" end
    return "unknown"
end

local RECORD_TYPES = {
    [0x15] = "alert",
    [0x16] = "handshake",
    [0x17] = "application data",
    [0x19] = "early data",
}
local VERSIONS = { [0xf103] = "MMTLS f103", [0xf104] = "MMTLS f104" }

-- ------------------------------------------------------------------ protocols

local wx = Proto("wxnet", "WeChat long link (S32)")
local f_len = ProtoField.uint32("wxnet.len", "Total length", base.DEC)
local f_hlen = ProtoField.uint16("wxnet.header_len", "Header length", base.DEC)
local f_ver = ProtoField.uint16("wxnet.version", "Version", base.DEC)
local f_cmd = ProtoField.uint32("wxnet.cmd", "Command", base.DEC)
local f_name = ProtoField.string("wxnet.cmd_name", "Command name")
local f_seq = ProtoField.uint32("wxnet.seq", "Sequence", base.DEC)
local f_body = ProtoField.bytes("wxnet.body", "Body")
wx.fields = { f_len, f_hlen, f_ver, f_cmd, f_name, f_seq, f_body }

local mm = Proto("mmtls", "WeChat MMTLS record")
local m_type = ProtoField.uint8("mmtls.type", "Record type", base.HEX, RECORD_TYPES)
local m_ver = ProtoField.uint16("mmtls.version", "Version", base.HEX, VERSIONS)
local m_len = ProtoField.uint16("mmtls.length", "Length", base.DEC)
local m_body = ProtoField.bytes("mmtls.body", "Record body")
mm.fields = { m_type, m_ver, m_len, m_body }

-- --------------------------------------------------------------- recognisers

-- Is there an S32 head at offset? (head length 16, version 1, total 16..1 MiB)
local function is_s32(tvb, offset)
    if tvb:len() - offset < 16 then return false end
    local total = tvb(offset, 4):uint()
    return tvb(offset + 4, 2):uint() == 16 and tvb(offset + 6, 2):uint() == 1
        and total >= 16 and total <= MAX_PACKET
end

local function is_mmtls(tvb, offset)
    if tvb:len() - offset < 5 then return false end
    return RECORD_TYPES[tvb(offset, 1):uint()] ~= nil
        and VERSIONS[tvb(offset + 1, 2):uint()] ~= nil
        and tvb(offset + 3, 2):uint() > 0
end

-- Dissect consecutive PDUs of one kind from offset 0; ask TCP for more bytes when the
-- last one is cut. Returns the bytes consumed.
local function dissect_pdus(tvb, pinfo, tree, kind)
    local offset, n = 0, tvb:len()
    local infos = {}
    while offset < n do
        local left = n - offset
        local need = kind == "wxnet" and 16 or 5
        if left < need then
            pinfo.desegment_offset = offset
            pinfo.desegment_len = DESEGMENT_ONE_MORE_SEGMENT
            break
        end
        local ok = (kind == "wxnet") and is_s32(tvb, offset) or (kind == "mmtls" and is_mmtls(tvb, offset))
        if not ok then
            -- Not a PDU boundary we know: show the rest as data of this protocol.
            break
        end
        local size
        if kind == "wxnet" then
            size = tvb(offset, 4):uint()
        else
            size = 5 + tvb(offset + 3, 2):uint()
        end
        if left < size then
            pinfo.desegment_offset = offset
            pinfo.desegment_len = size - left
            break
        end
        if kind == "wxnet" then
            local cmd = tvb(offset + 8, 4):uint()
            local seq = tvb(offset + 12, 4):uint()
            local name = cmd_name(cmd)
            local sub = tree:add(wx, tvb(offset, size),
                string.format("WeChat long link, cmd %d (%s), seq %d, %d bytes", cmd, name, seq, size))
            sub:add(f_len, tvb(offset, 4))
            sub:add(f_hlen, tvb(offset + 4, 2))
            sub:add(f_ver, tvb(offset + 6, 2))
            sub:add(f_cmd, tvb(offset + 8, 4)):append_text(" (" .. name .. ")")
            sub:add(f_name, tvb(offset + 8, 4), name)
            sub:add(f_seq, tvb(offset + 12, 4))
            local hlen = tvb(offset + 4, 2):uint()
            if size > hlen then sub:add(f_body, tvb(offset + hlen, size - hlen)) end
            infos[#infos + 1] = string.format("cmd %d (%s) seq %d", cmd, name, seq)
        else
            local rtype = tvb(offset, 1):uint()
            local sub = tree:add(mm, tvb(offset, size),
                string.format("MMTLS record, %s, %d bytes", RECORD_TYPES[rtype], size - 5))
            sub:add(m_type, tvb(offset, 1))
            sub:add(m_ver, tvb(offset + 1, 2))
            sub:add(m_len, tvb(offset + 3, 2))
            if size > 5 then sub:add(m_body, tvb(offset + 5, size - 5)) end
            infos[#infos + 1] = RECORD_TYPES[rtype]
        end
        offset = offset + size
    end
    if #infos > 0 then
        pinfo.cols.protocol = kind == "wxnet" and "WXNET" or "MMTLS"
        pinfo.cols.info = table.concat(infos, ", ")
    end
    return n
end

local function kind_of(tvb)
    if is_s32(tvb, 0) then return "wxnet" end
    if is_mmtls(tvb, 0) then return "mmtls" end
    -- A head cut by the segment end: the fields present must fit.
    local n = tvb:len()
    if n > 0 and n < 16 and tvb(0, 1):uint() == 0 then
        if n < 6 or tvb(4, 2):uint() == 16 then
            if n < 8 or tvb(6, 2):uint() == 1 then return "wxnet-short" end
        end
    end
    return nil
end

-- --------------------------------------------------------------- registration

local tcp_port = DissectorTable.get("tcp.port")
local previous = {}
for _, port in ipairs(PORTS) do
    previous[port] = tcp_port:get_dissector(port)
end

-- The port dissector: ours when the data is ours, else whoever had the port.
local function by_port(tvb, pinfo, tree)
    local kind = kind_of(tvb)
    if kind == "wxnet-short" then
        pinfo.desegment_offset = 0
        pinfo.desegment_len = DESEGMENT_ONE_MORE_SEGMENT
        return tvb:len()
    end
    if kind then return dissect_pdus(tvb, pinfo, tree, kind) end
    local other = previous[pinfo.match_uint] or previous[pinfo.dst_port] or previous[pinfo.src_port]
    if other then
        -- Each dissector layer lowers can_desegment by one; give the port's own
        -- dissector (HTTP, TLS) what TCP gave us, so its reassembly works as without us.
        if pinfo.can_desegment > 0 then pinfo.can_desegment = pinfo.can_desegment + 1 end
        return other:call(tvb, pinfo, tree)
    end
    return 0
end

local wx_port = Proto("wxnet_port", "WeChat long link / MMTLS (port dispatch)")
wx_port.dissector = by_port
for _, port in ipairs(PORTS) do
    tcp_port:add(port, wx_port)
end

local function on_port(pinfo)
    for _, port in ipairs(PORTS) do
        if pinfo.src_port == port or pinfo.dst_port == port then return true end
    end
    return false
end

local function heuristic(tvb, pinfo, tree)
    if not on_port(pinfo) then return false end
    local kind = kind_of(tvb)
    if kind ~= "wxnet" and kind ~= "mmtls" then return false end
    dissect_pdus(tvb, pinfo, tree, kind)
    return true
end

wx:register_heuristic("tcp", heuristic)
