#!/usr/bin/env python3
# ruff: noqa: E501  (the dialogue is prose; wrapping every line would only hurt reading it)
"""Write `long_technical_support.json`: a 300+ turn support chat, assembled from hand-written segments.

The dialogue below is written by hand, segment by segment, in the order the session happened; this
script only numbers the turns, hangs the tool calls on the right turn and gives everything
timestamps. There is no randomness: running it twice writes byte-identical output.

Run from anywhere:  python examples/conversations/_make_long_conversation.py

What the session covers (so an analyser can be checked against it):
  * flaky Wi-Fi in a loft office on a 3-node mesh (hub + 2 satellites), two weeks after a storm/power cut
  * baseline speed tests, ordered reboot, moving the loft satellite, device list, guest network,
    channel change (5 GHz 44 -> 149, 2.4 GHz 6 -> 11), firmware 6.1.4/6.2.1 -> 6.3.0 (about 30 min wait),
    fast roaming, wired-backhaul advice, DNS left over from a previous provider, UPnP for an Xbox
  * the loft satellite keeps rebooting with a power brownout; adapter-swap test proves the unit is faulty
  * second issue: TV box live-TV buffering (E-204) fixed by ethernet cable + box software update
  * resolution: replacement Mesh Point shipped via `order_replacement_device` (device_replacement procedure)
  * LATE facts (turn 300 onwards): the customer moves to Galway on 18 December, wants to transfer the
    service (fibre available at H91 X4C8) and asks for a sales callback (CB-558104, Mon 23 Nov 09:30)
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("long_technical_support.json")
START = dt.datetime(2026, 11, 21, 14, 5, 12, tzinfo=dt.UTC)

ACCOUNT = "ACC-771045"
HUB = "HH6-0031-7788"
SAT_LIVING = "MP2-0042-1180"
SAT_LOFT = "MP2-0042-1377"
TVBOX = "TVB4K-0019-5521"


# --------------------------------------------------------------------------- tiny DSL
def U(text: str, wait: int = 0) -> tuple:
    """A customer message; `wait` = extra idle seconds before it (customer away, something rebooting)."""
    return ("turn", "user", text, wait)


def A(text: str, wait: int = 0) -> tuple:
    return ("turn", "agent", text, wait)


def S(text: str, wait: int = 0) -> tuple:
    return ("turn", "system", text, wait)


def T(
    name: str, arguments: dict, result: Any, ms: int, *, ok: bool = True, step: tuple | None = None
) -> tuple:
    """A tool call made after the latest turn. `step` = (procedure_name, step_order) when in a procedure."""
    ev: dict[str, Any] = {
        "type": "tool_call",
        "name": name,
        "arguments": arguments,
        "result": result,
        "succeeded": ok,
        "duration_ms": ms,
    }
    if step:
        ev["procedure_name"], ev["procedure_step_order"] = step
    return ("event", ev)


def EV(type_: str, name: str, **fields: Any) -> tuple:
    return ("event", {"type": type_, "name": name, **fields})


def MARK(label: str) -> tuple:
    """Remember the time of the latest turn, so a later tool result can refer to it."""
    return ("mark", label)


def speed(down: float, up: float, latency: int, jitter: int, loss: float, *, target: str) -> dict:
    return {
        "target": target,
        "download_mbps": down,
        "upload_mbps": up,
        "latency_ms": latency,
        "jitter_ms": jitter,
        "packet_loss_pct": loss,
        "server": "acme-speedtest-dub1",
    }


# --------------------------------------------------------------------------- the dialogue
OPENING = [
    A("Hi, you're chatting with Acme's virtual assistant. How can I help today?"),
    U(
        "Hi. My wifi keeps dropping out, mostly upstairs. It's been going on for about two weeks and I'm at the end of my rope"
    ),
    A(
        "Sorry to hear that, two weeks of dropouts is a long time. I'll help you work through it. Can you confirm the account number or the email address on the account first?"
    ),
    U("hannah.okafor@fastmail.ie"),
    T(
        "account_lookup",
        {"email": "hannah.okafor@fastmail.ie"},
        {
            "accountId": ACCOUNT,
            "name": "Hannah Okafor",
            "plan": "Fibre 1000 + Mesh Plus",
            "address": "14 Seaview Terrace, Clontarf, Dublin 3",
            "eircode_on_file": True,
            "equipment": [
                {"type": "router", "model": "HomeHub 6", "serial": HUB},
                {"type": "mesh_satellite", "model": "Acme Mesh Point 2", "serial": SAT_LIVING},
                {"type": "mesh_satellite", "model": "Acme Mesh Point 2", "serial": SAT_LOFT},
                {"type": "tv_box", "model": "Acme TV Box 4K", "serial": TVBOX},
            ],
        },
        231,
    ),
    A(
        "Thanks. I've found an account for Hannah Okafor at 14 Seaview Terrace, Clontarf. For security, could you tell me the Eircode?"
    ),
    U("D03 R8T4"),
    A(
        "That's confirmed, thank you. You're on Fibre 1000 with Mesh Plus: a HomeHub 6 router and two Mesh Point satellites. Is that the setup you have at home?"
    ),
    U(
        "Yes. The hub is in the hall where the fibre comes in, one mesh thing in the living room and one up in the attic, I converted it into an office last year"
    ),
    A(
        "Got it. When you say it drops out, what exactly happens? For example: the Wi-Fi name disappears, it stays connected but nothing loads, or it just gets very slow?"
    ),
    U(
        "It stays connected, the wifi icon is there, but nothing loads for like 30 seconds to a minute, then it comes back. On video calls I freeze and then get kicked out of the meeting. Happened three times during a client presentation on thursday. Not great"
    ),
    A(
        "That sounds really disruptive, especially in the middle of a presentation. Does it happen everywhere in the house, or mainly in the attic office?"
    ),
    U(
        "Mainly the office. Downstairs my husband says it's fine, but then he mostly uses the TV. Actually the TV box has been acting up too but let's do one thing at a time"
    ),
    A(
        "Agreed, let's focus on the office first. I've made a note about the TV box so we come back to it afterwards and it doesn't get forgotten."
    ),
]

TRIAGE = [
    U("ok"),
    A(
        "Do you remember if anything changed around two weeks ago? A power cut, new devices, furniture moved, anything like that?"
    ),
    U(
        "Hmm. There was a power cut on the 6th or 7th, the whole road went out for an hour in that storm. I don't think anything else changed. Oh, we got the kids a new tablet for a birthday but that's about it"
    ),
    A(
        "The power cut is worth noting. I'm going to look at the live status of your mesh network now."
    ),
    T(
        "mesh_get_status",
        {"account_id": ACCOUNT},
        {
            "hub": {
                "model": "HomeHub 6",
                "serial": HUB,
                "uptime_h": 4.2,
                "wan": "up",
                "wan_sync_mbps": 1000,
            },
            "satellites": [
                {
                    "name": "Living room",
                    "serial": SAT_LIVING,
                    "backhaul": "wireless_5ghz",
                    "rssi_dbm": -58,
                    "link_rate_mbps": 866,
                    "uptime_h": 4.1,
                    "reconnects_24h": 1,
                },
                {
                    "name": "Loft office",
                    "serial": SAT_LOFT,
                    "backhaul": "wireless_5ghz",
                    "rssi_dbm": -78,
                    "link_rate_mbps": 117,
                    "uptime_h": 0.3,
                    "reconnects_24h": 14,
                },
            ],
        },
        512,
    ),
    A(
        "This is interesting. The living room satellite looks healthy. The loft office one has a weak connection back to the hub, with a signal of about -78 dBm where I'd like to see -65 or better, and it has reconnected 14 times in the last 24 hours. It has also only been up for about 20 minutes."
    ),
    U("So it's basically losing connection and restarting?"),
    A(
        "Either losing its link to the hub or restarting; both show up as a reconnect, and I can't tell which yet. I also notice your hub has only been up for about four hours. Did someone restart it today?"
    ),
    U(
        "Yeah I unplugged it this morning, that's what I always do when it acts up. It works for a bit after"
    ),
    A(
        "Understood. Where exactly is the loft satellite placed? On the floor, on a desk, near anything metal?"
    ),
    U(
        "It's on the floor next to my desk, behind the radiator pipe. It's the only free socket up there, the other one is for the printer"
    ),
    A(
        "Floor level behind a radiator pipe is a tough spot: metal pipes and the water in them soak up Wi-Fi signal. And the signal already has to come up two floors from the hall. Is there anywhere higher up in the loft, or closer to the stairs, where it could go?"
    ),
    U(
        "There's a shelf by the stairs, I could run an extension lead there. Is that safe for the device? It's a normal multi plug"
    ),
    A(
        "Yes, a normal extension lead is fine for a Mesh Point. Before you move it, though, let's take a baseline speed test, so we can compare properly afterwards."
    ),
    U("Sure, what do I need to do"),
    A(
        "Nothing for now. I can run the test from our side on both the hub and the loft satellite. It takes about a minute."
    ),
]

FIRST_SPEEDTEST = [
    T(
        "network_speed_test",
        {"account_id": ACCOUNT, "target": "hub"},
        speed(938, 472, 4, 1, 0.0, target="hub"),
        21430,
    ),
    T(
        "network_speed_test",
        {"account_id": ACCOUNT, "target": f"satellite:{SAT_LOFT}"},
        speed(38, 21, 46, 31, 2.8, target=f"satellite:{SAT_LOFT}"),
        24877,
    ),
    A(
        "Results are in. At the hub: 938 Mbps down, 472 up, 4 ms latency. Your fibre line itself is perfect. At the loft satellite: 38 Mbps down, 21 up, 46 ms latency and 2.8% packet loss. So the problem is the Wi-Fi link between the hub and the loft, not your internet connection."
    ),
    U("38?? I'm paying for 1000"),
    A(
        "You are getting the 1000 at the hub; it's being lost on the way up to the attic. The packet loss is actually the bigger problem for video calls: even 1 to 2% is enough to make Teams or Zoom freeze."
    ),
    U("Ok that actually makes sense with what I'm seeing. So is it the attic one that's broken?"),
    A(
        "Not necessarily. A weak signal can come from the placement, from neighbours' networks, or from old firmware. I'd like to rule those out one by one, starting with a proper restart of the whole system in the right order."
    ),
    U("I restart it every day though 😅"),
    A(
        "I know! But with mesh, the order matters. If the satellites come back before the hub, they sometimes settle on a poor connection. I'll walk you through it; it takes around five minutes."
    ),
    U("Fine, go on"),
]

REBOOT = [
    A(
        "Step 1: unplug both Mesh Points, the living room one and the loft one, from the power. Leave them unplugged for now."
    ),
    U("ok give me a minute, I have to go up to the attic"),
    U("both unplugged", wait=75),
    A(
        "Thanks. Step 2: unplug the HomeHub in the hall, wait 30 seconds, then plug it back in. Don't press the reset pinhole on the back, just the power."
    ),
    U("done. it's flashing white"),
    A(
        "Perfect. Flashing white means it's starting up. Wait until the light is solid white, usually two to three minutes, and let me know."
    ),
    U("solid white now", wait=140),
    A(
        "Great. Step 3: plug in the living room Mesh Point first, and wait until its light is solid white too."
    ),
    U("ok. this one took a while, it was pulsing blue and then went white"),
    A(
        "Pulsing blue means it's looking for the hub, that's normal. Step 4: now the loft one, but this time try it on the shelf by the stairs with the extension lead, if that's easy to do."
    ),
    U("I'll do that. back in a few"),
    U(
        "Ok it's on the shelf, about 1.5m high, near the top of the stairs. Light is solid white but it went orange for a bit first",
        wait=230,
    ),
    A(
        "Orange during start-up means it found the hub but the signal was weak at first; solid white means it has settled. Let me check the status again."
    ),
    T(
        "mesh_get_status",
        {"account_id": ACCOUNT},
        {
            "hub": {"serial": HUB, "uptime_h": 0.1, "wan": "up"},
            "satellites": [
                {
                    "name": "Living room",
                    "serial": SAT_LIVING,
                    "rssi_dbm": -57,
                    "link_rate_mbps": 866,
                    "uptime_h": 0.08,
                    "reconnects_24h": 2,
                },
                {
                    "name": "Loft office",
                    "serial": SAT_LOFT,
                    "rssi_dbm": -69,
                    "link_rate_mbps": 390,
                    "uptime_h": 0.03,
                    "reconnects_24h": 15,
                },
            ],
        },
        488,
    ),
    A(
        "Better already: the loft satellite is now at -69 dBm with a link rate of 390 Mbps, up from -78 and 117. Not perfect, but a big step. Let's run another speed test."
    ),
    T(
        "network_speed_test",
        {"account_id": ACCOUNT, "target": f"satellite:{SAT_LOFT}"},
        speed(186, 94, 14, 6, 0.3, target=f"satellite:{SAT_LOFT}"),
        23102,
    ),
    A(
        "Loft satellite now: 186 Mbps down, 94 up, 14 ms latency, 0.3% packet loss. That's roughly five times better than before."
    ),
    U("Wow ok. So it was just the spot?"),
    A(
        "The spot was a big part of it. But I wouldn't call it solved yet, because it's been dropping every so often rather than being constantly slow. Let's see whether it holds. Meanwhile I'd like to look at what's connected to your network."
    ),
    U("sure. btw my laptop is on the wifi and I'm doing this chat on my phone, is that ok?"),
    A(
        "That's perfect. If the Wi-Fi drops while we test, the chat on your phone stays up, as long as the phone is on mobile data. Is your phone on Wi-Fi or mobile data right now?"
    ),
    U("wifi I think. I'll switch it to mobile data so we don't lose each other"),
    S("Customer reconnected to the chat (connection changed).", wait=20),
    A("Welcome back, the switch worked. I'm still here."),
]

DEVICES = [
    T(
        "mesh_list_devices",
        {"account_id": ACCOUNT},
        {
            "total": 31,
            "by_node": {"hub": 17, SAT_LIVING: 9, SAT_LOFT: 5},
            "devices": [
                {"name": "Hannahs-MacBook-Pro", "node": SAT_LOFT, "band": "5GHz", "rssi_dbm": -52},
                {"name": "iPhone-Hannah", "node": SAT_LOFT, "band": "5GHz", "rssi_dbm": -49},
                {"name": "Galaxy-Tab-A7", "node": SAT_LOFT, "band": "5GHz", "rssi_dbm": -71},
                {"name": "HP-Envy-6000", "node": SAT_LOFT, "band": "2.4GHz", "rssi_dbm": -44},
                {"name": "Sonos-Office", "node": SAT_LOFT, "band": "2.4GHz", "rssi_dbm": -47},
                {"name": "ACME-TVBOX-4K", "node": SAT_LIVING, "band": "5GHz", "rssi_dbm": -61},
                {"name": "LGwebOSTV", "node": SAT_LIVING, "band": "5GHz", "rssi_dbm": -55},
                {"name": "Xbox-Series-S", "node": SAT_LIVING, "band": "5GHz", "rssi_dbm": -60},
                {"name": "ESP_3A9F12", "node": "hub", "band": "2.4GHz", "rssi_dbm": -66},
                {"name": "ESP_3A9F88", "node": "hub", "band": "2.4GHz", "rssi_dbm": -69},
                {"name": "android-7f3c21ab", "node": "hub", "band": "5GHz", "rssi_dbm": -41},
                {"name": "...", "note": "20 further devices with recognisable names omitted"},
            ],
        },
        644,
    ),
    A(
        "Here's what I can see: 31 devices connected. 17 on the hub, 9 on the living room satellite and 5 on the loft satellite. There are a few I'd like to ask you about, because I can't tell what they are from their names."
    ),
    U("31?! there are 4 of us. go on"),
    A(
        "It's more common than you'd think: phones, laptops, TVs, speakers and smart plugs all count. First one: 'ESP_3A9F12' on the hub, on 2.4 GHz. Any idea?"
    ),
    U("no clue"),
    A(
        "Names starting with ESP_ are usually smart home gadgets: smart plugs, bulbs, or something like a robot vacuum. Do you have any of those?"
    ),
    U("oh the christmas lights! we have smart plugs for the outdoor lights. two I think"),
    A(
        "That fits: there's also an 'ESP_3A9F88', so those are your two plugs. They're harmless. Next: 'Galaxy-Tab-A7' on the loft satellite."
    ),
    U(
        "That's the kids tablet, the new one. Why is that on the attic one though, the kids are downstairs"
    ),
    A(
        "Good question. It was probably upstairs when it connected and simply stayed with the loft node. Some devices are 'sticky' and don't switch to a closer node on their own. It's not harmful, but it means the loft node carries its traffic too, and that node is already at the edge of its range."
    ),
    U("so the kids watching youtube on the tablet is eating my bandwidth in the office?"),
    A(
        "A little, if it's connected through the loft node. Right now it's using almost nothing, but streaming video can take 5 to 10 Mbps. On a strong link that's nothing; on the weak link you had this morning, it could have made a difference."
    ),
    U("interesting. what else"),
    A("'HP-Envy-6000' on the loft satellite, 2.4 GHz only. Your printer, I assume?"),
    U("yes, that's my printer in the office"),
    A(
        "That model only supports 2.4 GHz. That's fine on its own, though chatty older devices can slow down the radio they're on. Do you print often?"
    ),
    U("maybe once a week. it's always asleep"),
    A("Then it's not a concern."),
    U("there's also a sonos speaker up there, does that matter?"),
    A(
        "'Sonos-Office', yes, I can see it on 2.4 GHz. Sonos speakers are fine on a mesh. If the music ever cuts out at the same moment as your calls freeze, that's the same Wi-Fi drop, not the speaker causing it."
    ),
    U("ok good, I'd be lost without my focus playlist"),
    A(
        "The playlist is safe. 🎧 Last unknown: 'android-7f3c21ab' on the hub, 5 GHz, with a very strong signal."
    ),
    U("no idea. should I be worried? is someone using my wifi??"),
    A(
        "Most likely it's a phone in your own house using a randomised name; Android does that for privacy. Does anyone at home have an Android phone and was near the hall recently?"
    ),
    U("my husband has a pixel. he's downstairs. let me ask him to turn off wifi on it for a sec"),
    U("he turned it off", wait=55),
    T(
        "mesh_list_devices",
        {"account_id": ACCOUNT, "filter": "android-7f3c21ab"},
        {"total": 30, "devices": []},
        402,
    ),
    A(
        "And 'android-7f3c21ab' has disappeared from the list, so it's his phone. Mystery solved, no intruder. He can switch Wi-Fi back on."
    ),
    U("phew. ok. so nothing weird then"),
    A(
        "Nothing weird. One thing I'd suggest at some point is changing the Wi-Fi password if it's still the one printed on the hub, but that's optional. How is the office connection doing so far?"
    ),
    U("it's been fine since we moved it. fingers crossed"),
]

GUEST = [
    U("actually about the password. it is still the one on the sticker. should I change it now?"),
    A(
        "It's a good idea eventually, since anyone who sees the hub can read it. But changing it means reconnecting all 30 devices by hand, including those smart plugs, which can be fiddly. I'd do it on a quiet evening rather than in the middle of troubleshooting."
    ),
    U("yeah, not today. I'll do it after christmas"),
    A(
        "Sensible. In the app it's under Wi-Fi > Network name & password. You could also set up a guest network for visitors, so you never have to share the main password."
    ),
    U("ooh a guest network would be handy, I have clients over sometimes. can you turn it on?"),
    A("Sure. What would you like it to be called?"),
    U("Okafor-Guest"),
    T(
        "wifi_configure_guest",
        {
            "account_id": ACCOUNT,
            "enabled": True,
            "ssid": "Okafor-Guest",
            "generate_password": True,
            "client_isolation": True,
        },
        {
            "enabled": True,
            "ssid": "Okafor-Guest",
            "password": "sunny-harbour-7342",
            "client_isolation": True,
        },
        1310,
    ),
    A(
        "The guest network 'Okafor-Guest' is on, with the password sunny-harbour-7342. Guests get internet access but can't see your own devices, like the printer or your laptop."
    ),
    U("brilliant, thanks"),
]

CHANNELS = [
    A(
        "While things are stable, I'd like to check how crowded the Wi-Fi channels are around you. Terraced houses often have a lot of neighbouring networks."
    ),
    T(
        "wifi_get_channel_scan",
        {"account_id": ACCOUNT, "device": HUB},
        {
            "current": {
                "5GHz": {"channel": 44, "width_mhz": 80},
                "2.4GHz": {"channel": 6, "width_mhz": 20},
            },
            "neighbours_5ghz": {
                "36": 4,
                "40": 3,
                "44": 5,
                "48": 2,
                "52-64": 1,
                "100-140": 1,
                "149": 0,
                "153": 0,
                "157": 0,
                "161": 0,
            },
            "neighbours_24ghz": {"1": 9, "6": 7, "11": 3},
        },
        8214,
    ),
    A(
        "As I suspected. Your 5 GHz network is on channel 44, which it shares with 5 other networks, and channels 36 to 48 have 14 neighbours between them. Channels 149 to 161 are completely empty. On 2.4 GHz you're on channel 6 with 7 neighbours, while channel 11 has only 3."
    ),
    U("is that like radio stations? my neighbours are shouting over my wifi?"),
    A(
        "That's a very good way to put it. Networks on the same channel take turns to talk, so the more of them there are, the more waiting. And your mesh uses that same 5 GHz radio for the hub and satellites to talk to each other."
    ),
    U("so can you move me to the empty one"),
    A(
        "I can. Changing the channel makes every device disconnect for about 30 seconds and reconnect. Is that OK right now, nobody in the middle of something important?"
    ),
    U("my son is playing fortnite. he'll survive. do it"),
    A("Ha, I'll be quick. Moving 5 GHz to channel 149 at 80 MHz, and 2.4 GHz to channel 11."),
    T(
        "wifi_set_channel",
        {"account_id": ACCOUNT, "band": "5GHz", "channel": 149, "width_mhz": 80},
        {"applied": True, "band": "5GHz", "channel": 149, "dfs": False},
        3120,
    ),
    T(
        "wifi_set_channel",
        {"account_id": ACCOUNT, "band": "2.4GHz", "channel": 11, "width_mhz": 20},
        {"applied": True, "band": "2.4GHz", "channel": 11},
        2874,
    ),
    A(
        "Both changes are applied. Devices will reconnect over the next minute. Let me know when your laptop is back online."
    ),
    U("laptop back. and my son is yelling from downstairs so his is back too lol"),
    A("Apologies to your son! Let me look at the loft satellite again."),
    T(
        "mesh_get_status",
        {"account_id": ACCOUNT, "device": SAT_LOFT},
        {
            "name": "Loft office",
            "serial": SAT_LOFT,
            "rssi_dbm": -67,
            "link_rate_mbps": 433,
            "uptime_h": 0.4,
            "reconnects_1h": 0,
        },
        455,
    ),
    A(
        "A further improvement: -67 dBm and a 433 Mbps link. The channel change mostly helps consistency rather than top speed: fewer moments where the link has to wait its turn."
    ),
    U(
        "question, why didn't it pick the empty channel itself? isn't that the whole point of smart wifi"
    ),
    A(
        "Fair question. The HomeHub does choose channels automatically, but only at start-up and at 3 am, and older firmware versions prefer the lower channels because not every device supports 149 and above. That's something the firmware update may help with, which is my next suggestion."
    ),
    U("wait, what about DFS, I read somewhere that dfs channels are better?"),
    A(
        "You've done your reading! DFS channels (52 to 144) are often empty, but the router has to leave them immediately if it detects weather radar, which causes a short dropout, exactly what we're trying to avoid. For you, 149 is the better choice: it's free and it isn't a DFS channel."
    ),
    U("ok. makes sense."),
    U(
        "ugh. it just dropped again. I was on a test call with my colleague and it froze for maybe 20 seconds",
        wait=610,
    ),
    MARK("first_reboot_seen"),
    A(
        "Thanks for telling me straight away, that's useful. Let me check what the loft satellite recorded."
    ),
    T(
        "mesh_get_status",
        {"account_id": ACCOUNT, "device": SAT_LOFT},
        {
            "name": "Loft office",
            "serial": SAT_LOFT,
            "rssi_dbm": -67,
            "link_rate_mbps": 433,
            "uptime_h": 0.02,
            "reconnects_1h": 1,
            "last_reconnect_reason": "device_boot",
        },
        470,
    ),
    A(
        "The loft satellite shows an uptime of about one minute, and the reason for the reconnect is 'device boot'. So this wasn't a weak-signal blip: the satellite itself restarted."
    ),
    U("restarted? I didn't touch it"),
    A(
        "I believe you. A satellite restarting on its own can be a firmware bug, or a hardware or power problem. Let's rule out firmware first, since your devices may be behind."
    ),
    U("I'm starting to lose faith here tbh"),
    A(
        "That's understandable after two weeks of this. We have fixed the weak signal, which was a real problem. The restart is a second, separate issue, and we're narrowing it down. Bear with me."
    ),
    U("ok ok. go"),
]

FIRMWARE = [
    T(
        "device_get_firmware",
        {"account_id": ACCOUNT},
        {
            "devices": [
                {"serial": HUB, "version": "6.2.1"},
                {"serial": SAT_LIVING, "version": "6.1.4"},
                {"serial": SAT_LOFT, "version": "6.1.4"},
            ],
            "latest": "6.3.0",
            "auto_update": False,
            "release_notes_6_3_0": [
                "Fix: satellite unexpected reboot under high retransmission load",
                "Improved automatic channel selection incl. UNII-3 (149-165)",
                "Fast roaming stability improvements",
            ],
        },
        377,
    ),
    A(
        "Found something. Your HomeHub is on firmware 6.2.1 and both Mesh Points are on 6.1.4. The current version is 6.3.0, and its release notes mention a fix for 'satellite unexpected reboot under high retransmission load', which sounds a lot like what you're seeing, plus better automatic channel selection."
    ),
    U("why am I not on the latest? isn't that automatic?"),
    A(
        "It normally is, but automatic updates are switched off on your hub. That usually means someone turned them off in the app, or it was set that way after a factory reset."
    ),
    U(
        "oh. I might have done that. the hub restarted in the middle of a call once for an update and I was furious so I turned them off. oops"
    ),
    A(
        "Completely understandable! I can switch them back on with a night-time window, say 2 to 5 am, so an update never interrupts your working day again."
    ),
    U("yes please do that"),
    T(
        "device_set_auto_update",
        {"account_id": ACCOUNT, "enabled": True, "window": "02:00-05:00"},
        {"auto_update": True, "window": "02:00-05:00"},
        298,
    ),
    A(
        "Done: automatic updates are back on, limited to 2 to 5 am. Now for today: I can push 6.3.0 to the hub and both satellites. It takes about 25 to 35 minutes in total; the hub goes first, then the satellites one at a time. The internet will drop a few times during that."
    ),
    U("30 minutes with no internet?"),
    A(
        "Not the whole time: there'll be two or three interruptions of a few minutes each. But I'd treat the next half hour as unreliable. Is now OK, or would you rather I schedule it for tonight?"
    ),
    U("now is fine. I'm not working today. let me warn the family"),
    U("ok, go for it", wait=45),
    A(
        "Starting the update now. Important: please don't unplug anything or press any buttons until I tell you it's finished, even if the lights do strange things. An interrupted update is the one thing that can really break a device."
    ),
    T(
        "device_update_firmware",
        {"account_id": ACCOUNT, "devices": [HUB, SAT_LIVING, SAT_LOFT], "version": "6.3.0"},
        {
            "jobId": "FW-2611-88213",
            "status": "queued",
            "estimated_minutes": 30,
            "order": [HUB, SAT_LIVING, SAT_LOFT],
        },
        1544,
    ),
    A(
        "The update has started, reference FW-2611-88213. The hub's light will start pulsing purple. I'll check on progress regularly, so feel free to step away and come back."
    ),
    U("purple, yes. like a disco"),
    A("😄 That's the one."),
    U(
        "random question while we wait. does the update reset my wifi name and password? I really don't want to reconnect 30 devices"
    ),
    A(
        "No, firmware updates keep all your settings: network name, password, the guest network, the channels we just set. Everything stays."
    ),
    U("and the mesh points, do they need to 'see' the hub? like line of sight?"),
    A(
        "Not line of sight, but every wall and floor costs signal. Brick and floors with underfloor heating are the worst; plasterboard is mild. For the loft, the signal comes up through two floors, which is why a spot near the stairwell helps: the stairwell is an open path."
    ),
    U("makes sense. the house is from the 1930s, thick walls everywhere"),
    A(
        "1930s brick is lovely but tough on Wi-Fi. It's one of the reasons mesh makes sense in your house at all."
    ),
    U("still purple. is that normal? it's been like 7 minutes", wait=300),
    T(
        "device_get_update_status",
        {"job_id": "FW-2611-88213"},
        {
            "status": "running",
            "devices": {HUB: "installing 80%", SAT_LIVING: "pending", SAT_LOFT: "pending"},
        },
        210,
    ),
    A(
        "Yes, perfectly normal. The hub is 80% through installing. Once it has restarted, the satellites take their turn."
    ),
    U("ok. I'm going to make a cup of tea then"),
    A("Good plan. Take your time."),
    U("back. the hall one is white again and the living room one is purple now", wait=590),
    T(
        "device_get_update_status",
        {"job_id": "FW-2611-88213"},
        {
            "status": "running",
            "devices": {HUB: "done 6.3.0", SAT_LIVING: "installing 45%", SAT_LOFT: "pending"},
        },
        198,
    ),
    A(
        "Right on schedule: the hub has finished and is on 6.3.0, and the living room satellite is at 45%. The loft one is next."
    ),
    U(
        "while we wait, is there anything I should change in the app? I feel like I don't understand half the settings in there"
    ),
    A(
        "Most settings are best left on default. The two worth knowing: 'Band steering' should be on, as it nudges capable devices to 5 GHz, and 'Fast roaming' (802.11r) should be on, so phones and laptops hop between nodes smoothly as you walk around the house. I'll check both once the update is done."
    ),
    U("ok good. I never knew what those meant"),
    U("the attic one is purple now, the living room one is white", wait=520),
    T(
        "device_get_update_status",
        {"job_id": "FW-2611-88213"},
        {
            "status": "running",
            "devices": {HUB: "done 6.3.0", SAT_LIVING: "done 6.3.0", SAT_LOFT: "installing 60%"},
        },
        204,
    ),
    A("Living room is done, and the loft is at 60%. Nearly there."),
    U("my husband is asking if netflix will work tonight 🙄"),
    A(
        "Tell him yes: by the time dinner's ready, everything should be on the new firmware and back to normal."
    ),
    U("all three white!", wait=290),
    T(
        "device_get_update_status",
        {"job_id": "FW-2611-88213"},
        {
            "status": "completed",
            "devices": {HUB: "done 6.3.0", SAT_LIVING: "done 6.3.0", SAT_LOFT: "done 6.3.0"},
        },
        188,
    ),
    A(
        "Confirmed: all three devices are on 6.3.0 and the update job has completed. Well done for not unplugging anything 🙂"
    ),
    T(
        "mesh_get_settings",
        {"account_id": ACCOUNT},
        {"band_steering": True, "fast_roaming": False, "wps": False},
        260,
    ),
    A(
        "I've checked the settings: band steering is on, but fast roaming is off. Shall I turn it on? Very old devices occasionally struggle with it; if anything stops connecting afterwards, I can switch it back off."
    ),
    U("do it"),
    T(
        "mesh_update_settings",
        {"account_id": ACCOUNT, "fast_roaming": True},
        {"fast_roaming": True},
        905,
    ),
    A("Fast roaming is now on."),
]

AFTER_FIRMWARE = [
    A("Let's see how the loft does on the new firmware."),
    T(
        "network_speed_test",
        {"account_id": ACCOUNT, "target": f"satellite:{SAT_LOFT}"},
        speed(412, 201, 9, 2, 0.0, target=f"satellite:{SAT_LOFT}"),
        22650,
    ),
    A(
        "Loft satellite now: 412 Mbps down, 201 up, 9 ms latency and 0% packet loss. Compared with 38 Mbps and 2.8% loss at the start of this chat, that's a different network."
    ),
    U("!!! ok that's amazing. 412. why is it so much better, just the firmware?"),
    A(
        "It's the combination: the new position gave it a stronger signal, the empty channel removed the competition, and 6.3.0 handles a busy link better. Each step added a bit."
    ),
    U("let me do a proper test call with my colleague, she's around. give me 10 min"),
    A("Sure, I'll be here."),
    U(
        "Call went fine. 10 minutes, screen sharing, no freezing. She said I was clearer than usual",
        wait=700,
    ),
    A("Great news. That's exactly the kind of test that matters."),
    U(
        "also, when the wifi drops my work VPN disconnects and I have to log in again with the authenticator app every single time. anything you can do about that?"
    ),
    A(
        "Unfortunately the VPN is run by your employer, so I can't change how it reconnects. But the disconnects are a symptom of the Wi-Fi drops; once those stop, the VPN should stay up. If it still disconnects on a stable connection, your company's IT team is the one to ask."
    ),
    U("ok that's fair"),
]

BACKHAUL = [
    U(
        "my brother in law keeps saying I should just run a cable up to the attic. would that be better than all this mesh stuff?"
    ),
    A(
        "He's right that a cable is the gold standard. Mesh Points support 'wired backhaul': if the loft satellite is connected to the hub with an ethernet cable, it doesn't need the wireless link at all. You'd get close to the full 1000 Mbps up there, with no interference."
    ),
    U("how hard is that? I'm not drilling through 2 floors myself"),
    A(
        "It's usually a job for an electrician: a Cat6 cable from the hall to the loft, often run through the hot press or alongside existing cables. If that's not practical, powerline adapters send the network over your electrical wiring. Easier, though results vary in older houses."
    ),
    U(
        "we had an electrician quote for something else, I could ask him. would I need to change any settings?"
    ),
    A(
        "No. Plug the cable into a LAN port on the hub and into the satellite, and it switches to wired backhaul automatically. You'd see 'Backhaul: Ethernet' in the app."
    ),
    U("nice. I'll think about it. for now wireless is fine if it stays like this"),
    A(
        "Agreed. With today's changes, wireless should be fine for video calls. The cable is a nice-to-have."
    ),
    U("can I ask about something else while I have you"),
    A("Of course."),
]

DNS = [
    U(
        "some websites take ages to load the first time. I click a link and nothing happens for 3-4 seconds, then it loads fast. it's been like that for ages, even before the wifi problems"
    ),
    A(
        "A pause before the page starts, then fast once it does, often points to DNS: the 'phone book' that turns a website name into an address. Let me look at your hub's DNS settings."
    ),
    T(
        "router_get_dns_settings",
        {"account_id": ACCOUNT, "device": HUB},
        {
            "mode": "manual",
            "primary": "194.125.2.240",
            "secondary": "194.125.2.241",
            "ipv6_dns": "auto",
            "avg_lookup_ms_24h": 1840,
        },
        344,
    ),
    A(
        "Your hub has DNS set manually to 194.125.2.240 and 194.125.2.241, and lookups are taking almost two seconds on average. Those aren't Acme's servers. Do you know who set them?"
    ),
    U(
        "hmm. probably me, years ago. I copied the settings from my old provider when I switched to you. I thought it was needed"
    ),
    A(
        "That explains it. Those servers belong to your previous provider; from our network they're slow to answer, and they could stop responding altogether one day. I'd recommend switching to automatic, which uses Acme's DNS servers in Dublin. A public one like 1.1.1.1 would also work."
    ),
    U("what's the difference?"),
    A(
        "Acme's are closest to you, so usually the fastest, and they're the ones we support. 1.1.1.1 is run by Cloudflare, also fast and privacy-focused. Either is far better than what you have now. For most households, automatic is the simplest."
    ),
    U("automatic then"),
    T(
        "router_set_dns",
        {"account_id": ACCOUNT, "device": HUB, "mode": "auto"},
        {"mode": "auto", "primary": "185.94.100.10", "secondary": "185.94.100.11"},
        1122,
    ),
    A(
        "Done. DNS is now automatic and uses Acme's resolvers. Devices pick up the change when they reconnect; the quickest way is to turn Wi-Fi off and on again on your laptop."
    ),
    U("done. trying some sites"),
    U(
        "yes! the news site loads straight away now. this has annoyed me for literally years",
        wait=80,
    ),
    A("Glad we caught that one, it was hiding in plain sight."),
    U(
        "what about the gaming thing, my son keeps saying his NAT type is strict on the xbox, is that related?"
    ),
    A(
        "It's the router, but not DNS. 'Strict NAT' usually means UPnP is off, so the console can't open the connections it needs for multiplayer. Let me check."
    ),
    T(
        "router_get_settings",
        {"account_id": ACCOUNT, "device": HUB, "keys": ["upnp"]},
        {"upnp": False},
        251,
    ),
    A(
        "UPnP is off on your hub. Turning it on lets the Xbox set up its own connections and should change NAT to Open. The trade-off is small: it allows devices on your home network to open ports without asking you. Most households keep it on."
    ),
    U("he'll never forgive me if I don't. turn it on"),
    T(
        "router_update_settings",
        {"account_id": ACCOUNT, "device": HUB, "upnp": True},
        {"upnp": True},
        980,
    ),
    A(
        "UPnP is on. He'll need to restart the Xbox and then check the network settings; it should say 'Open'."
    ),
    U("he says it's open now. apparently I'm a hero", wait=230),
    A("Officially a hero. 😄"),
]

BROWNOUT = [
    U(
        "ok bad news. the attic one just went orange, then off, then white again. internet dropped for about a minute",
        wait=880,
    ),
    MARK("second_reboot_seen"),
    A("Sorry, not what we wanted to see. Let me pull the event log for the loft satellite."),
    T(
        "mesh_get_event_log",
        {"account_id": ACCOUNT, "device": SAT_LOFT, "hours": 72},
        lambda m: {
            "device": SAT_LOFT,
            "unexpected_reboots": 9,
            "entries": [
                {
                    "at": "2026-11-19T09:12:40Z",
                    "event": "reboot",
                    "reason": "brownout",
                    "input_voltage_v": 10.8,
                    "firmware": "6.1.4",
                },
                {
                    "at": "2026-11-19T15:47:02Z",
                    "event": "reboot",
                    "reason": "brownout",
                    "input_voltage_v": 10.9,
                    "firmware": "6.1.4",
                },
                {
                    "at": "2026-11-20T10:03:55Z",
                    "event": "reboot",
                    "reason": "brownout",
                    "input_voltage_v": 10.7,
                    "firmware": "6.1.4",
                },
                {
                    "at": "2026-11-20T16:21:19Z",
                    "event": "reboot",
                    "reason": "brownout",
                    "input_voltage_v": 10.8,
                    "firmware": "6.1.4",
                },
                {
                    "at": "2026-11-20T22:58:41Z",
                    "event": "reboot",
                    "reason": "brownout",
                    "input_voltage_v": 10.8,
                    "firmware": "6.1.4",
                },
                {
                    "at": "2026-11-21T08:30:12Z",
                    "event": "reboot",
                    "reason": "brownout",
                    "input_voltage_v": 10.9,
                    "firmware": "6.1.4",
                },
                {
                    "at": "2026-11-21T13:44:27Z",
                    "event": "reboot",
                    "reason": "brownout",
                    "input_voltage_v": 10.8,
                    "firmware": "6.1.4",
                },
                {
                    "at": iso(m["first_reboot_seen"] - dt.timedelta(seconds=64)),
                    "event": "reboot",
                    "reason": "brownout",
                    "input_voltage_v": 10.8,
                    "firmware": "6.1.4",
                },
                {
                    "at": iso(m["second_reboot_seen"] - dt.timedelta(seconds=71)),
                    "event": "reboot",
                    "reason": "brownout",
                    "input_voltage_v": 10.9,
                    "firmware": "6.3.0",
                },
            ],
            "min_input_voltage_v": 11.4,
        },
        733,
    ),
    A(
        "This is revealing. Over the last 72 hours the loft satellite restarted 9 times, and every time the reason is the same: 'brownout', meaning its input voltage dropped to about 10.8 V when it needs at least 11.4 V. The firmware update couldn't change that, because it's a power problem, not software."
    ),
    U("power? like my electricity is bad?"),
    A(
        "Unlikely to be your house's electricity, or the other two devices would be affected too. It's more likely the satellite's power adapter, or the power circuit inside the satellite. The storm and power cut two weeks ago could have caused it; a surge can damage adapters."
    ),
    U("that would fit with when it started. damn"),
    A(
        "It would. There's a simple way to find out which part is faulty. The living room satellite uses exactly the same adapter. Could you swap them: the living room adapter goes to the loft, and the loft adapter goes to the living room?"
    ),
    U("sure. won't that break the living room one?"),
    A(
        "No, the adapters are identical models. If the loft satellite keeps restarting on the good adapter, the satellite itself is faulty. If the living room one starts restarting instead, it's the adapter. Either way we'll know."
    ),
    U(
        "clever. ok doing it now. should I plug the attic one straight into the wall instead of the extension lead too?"
    ),
    A(
        "Yes, let's remove that variable as well. Plug it straight into a wall socket for the test, even if that means it's back on the floor for now. Finding the fault matters more than the position at this point."
    ),
    U("swapped. attic one is in the wall socket by the desk again. both white", wait=290),
    A(
        "Thanks. Now we need a bit of patience: it has been restarting roughly every one to six hours. Meanwhile, you mentioned the TV box at the start. Shall we look at that while we wait?"
    ),
    U("yes please, that's the other thing driving us mad"),
]

TVBOX_SEGMENT = [
    A("What's happening with the TV box?"),
    U(
        "The live channels keep buffering. Netflix and the apps are mostly fine, but live tv, especially sport, freezes and sometimes there's an error E-204. My husband watches the rugby on it so this is a Big Problem in our house"
    ),
    A(
        "Understood, rugby is serious business. E-204 on the Acme TV Box means the live stream stopped arriving for a few seconds. Let me check the box."
    ),
    T(
        "tvbox_get_status",
        {"account_id": ACCOUNT, "serial": TVBOX},
        {
            "model": "Acme TV Box 4K",
            "serial": TVBOX,
            "software": "3.8.2",
            "latest_software": "3.9.1",
            "connection": "wifi",
            "connected_node": SAT_LIVING,
            "wifi_rssi_dbm": -61,
            "band": "5GHz",
            "live_tv_errors_24h": {"E-204": 11},
            "multicast": "degraded_over_wireless_mesh",
        },
        566,
    ),
    A(
        "A few findings. The box is connected over Wi-Fi to the living room satellite, and it logged 11 E-204 errors in the last 24 hours. Acme's live TV uses a special streaming method called multicast, which doesn't always travel well over a wireless mesh hop. The on-demand apps use a different method, which is why Netflix is fine."
    ),
    U("so what do I do? move the box?"),
    A(
        "The best fix is a cable. Your living room satellite has two ethernet ports on the back. If the TV box is close to it, a short network cable between them takes Wi-Fi out of the picture for the TV."
    ),
    U("they're both under the tv. how long a cable do I need?"),
    A(
        "Any standard ethernet cable will do; 1 to 2 metres is plenty. There may even be one in the TV box packaging, as we include a 1.5 m cable."
    ),
    U("let me check the cupboard of doom"),
    U(
        "found a yellow one in the box! plugging in. which port on the mesh thing, there are two",
        wait=220,
    ),
    A(
        "Either one, they're identical. The other end goes into the 'LAN' port on the back of the TV box."
    ),
    U("done. the little network symbol on the tv changed"),
    T(
        "tvbox_get_status",
        {"account_id": ACCOUNT, "serial": TVBOX},
        {
            "serial": TVBOX,
            "software": "3.8.2",
            "latest_software": "3.9.1",
            "connection": "ethernet",
            "connected_node": SAT_LIVING,
            "link_mbps": 1000,
            "multicast": "ok",
        },
        541,
    ),
    A(
        "I can see the box is now connected by cable at 1 Gbps through the living room satellite, and live TV streaming shows as OK. The box is also behind on software: it's on 3.8.2, and 3.9.1 is available."
    ),
    U("another update 😂"),
    A(
        "I know, I know. This one is quicker, about five minutes, and only the TV box restarts. It includes a fix for live TV buffering on some channels. Shall I send it?"
    ),
    U("go on. nobody's watching right now"),
    T(
        "tvbox_update_software",
        {"account_id": ACCOUNT, "serial": TVBOX, "version": "3.9.1"},
        {"status": "queued", "estimated_minutes": 5},
        689,
    ),
    A(
        "Sent. The TV will show 'Updating software' and restart once or twice. Let me know when you see the home screen again."
    ),
    U("home screen is back", wait=330),
    A(
        "Great. Could you put on a live channel, a sports one if possible since those have the highest quality stream, and leave it running for a few minutes?"
    ),
    U("putting on Sport 1. there's some football on"),
    U("it's been 5 minutes, no buffering. the picture looks sharper too actually", wait=290),
    A(
        "The sharper picture makes sense: over Wi-Fi the box was probably dropping to a lower quality to cope. On the cable it gets the full HD stream."
    ),
    U("husband is happy. he says thank you"),
    A("Tell him he's very welcome, and enjoy the rugby next weekend."),
    U(
        "one more tv thing. the remote sometimes doesn't work, we have to press buttons like 3 times"
    ),
    A(
        "That's usually the remote rather than the network. Does it happen more when you point at an angle, or all the time?"
    ),
    U("all the time, even close up"),
    A(
        "Try fresh batteries first: the remote takes two AAA, and weak batteries cause exactly that. If that doesn't help, hold 'OK' and 'Back' together for 5 seconds to pair it with the box again."
    ),
    U("I'll try batteries later, we're out of AAA. good tip"),
    A(
        "If it still misbehaves after fresh batteries and re-pairing, tell us and we'll send you a new remote."
    ),
    U("will do"),
]

REPLACEMENT = [
    U(
        "ok, it's happened. the attic one just restarted again. orange, off, white. with the living room adapter AND plugged into the wall",
        wait=1150,
    ),
    A("Thank you for running that test so carefully. Let me confirm it in the logs."),
    T(
        "mesh_get_event_log",
        {"account_id": ACCOUNT, "device": SAT_LOFT, "hours": 1},
        {
            "device": SAT_LOFT,
            "entries": [
                {
                    "minutes_ago": 1,
                    "event": "reboot",
                    "reason": "brownout",
                    "input_voltage_v": 10.8,
                    "firmware": "6.3.0",
                    "power_adapter": "swapped",
                }
            ],
        },
        402,
    ),
    T(
        "mesh_get_event_log",
        {"account_id": ACCOUNT, "device": SAT_LIVING, "hours": 1},
        {"device": SAT_LIVING, "entries": [], "min_input_voltage_v_observed": 11.9},
        388,
    ),
    A(
        "Confirmed. The loft satellite restarted with the same brownout error even on the known-good adapter, while the living room satellite is perfectly happy on the loft's old adapter. So the fault is inside the loft satellite itself; most likely its power circuit was damaged in the storm."
    ),
    U("so it's broken. great. can you replace it?"),
    A(
        "Yes. Your Mesh Points are rented Acme equipment, so a faulty one is replaced free of charge. I'll start the replacement now."
    ),
    EV("procedure_started", "device_replacement", arguments={"faulty_serial": SAT_LOFT}),
    T(
        "device_check_warranty",
        {"account_id": ACCOUNT, "serial": SAT_LOFT},
        {"serial": SAT_LOFT, "ownership": "rental", "covered": True, "charge_eur": 0.0},
        301,
        step=("device_replacement", 1),
    ),
    T(
        "account_get_delivery_address",
        {"account_id": ACCOUNT},
        {"address": "14 Seaview Terrace, Clontarf, Dublin 3, D03 R8T4", "verified": True},
        215,
        step=("device_replacement", 2),
    ),
    A(
        "The device is covered, so there's no charge. I'll ship a new Mesh Point to the address on your account: 14 Seaview Terrace, Clontarf, Dublin 3, D03 R8T4. Is that right for delivery?"
    ),
    U("yes that's right. will someone need to be home?"),
    A(
        "It goes by courier and needs a signature. Delivery is normally within two working days, between 8 am and 6 pm. If nobody's in, they'll leave a card and you can pick a safe place or a collection point."
    ),
    U("I work from home so it's fine. mostly. when I'm not in the attic freezing on calls lol"),
    A("Hopefully the new one puts an end to that. Placing the order now."),
    T(
        "order_replacement_device",
        {
            "account_id": ACCOUNT,
            "faulty_serial": SAT_LOFT,
            "model": "Acme Mesh Point 2",
            "reason": "hardware_fault_power_brownout",
            "ship_to": "14 Seaview Terrace, Clontarf, Dublin 3, D03 R8T4",
            "return_label": True,
            "charge_eur": 0.0,
        },
        {
            "orderId": "RPL-2611-40377",
            "status": "confirmed",
            "carrier": "DPD Ireland",
            "estimated_delivery": "2026-11-24",
            "tracking": "DPD-IE-0712840377",
            "return_label": "included_in_box",
        },
        1876,
        step=("device_replacement", 3),
    ),
    EV(
        "procedure_finished",
        "device_replacement",
        result={"status": "completed", "orderId": "RPL-2611-40377"},
    ),
    A(
        "Replacement ordered: order number RPL-2611-40377, sent with DPD, expected on Tuesday 24 November. You'll get a text with the tracking link. There'll be a prepaid return label in the box for the faulty unit."
    ),
    U("tuesday. and until then? should I leave the broken one plugged in?"),
    A(
        "Yes, keep it plugged in: it works most of the time, and each restart only lasts about a minute. If it becomes unbearable during a call, unplug it and your laptop will connect to the living room satellite instead. Slower up in the loft, but without the restarts."
    ),
    U("ok. and when the new one comes, how do I set it up?"),
    A(
        "It's simple: unplug the old one, plug the new one in on the shelf by the stairs, and press the pair button on the back once. It shows up in the app within a few minutes. Then put the old one in the box with the return label and drop it at any DPD Pickup point within 14 days."
    ),
    U("easy enough. do I need to send back the adapter too?"),
    A(
        "Yes, please return the satellite with an adapter. The new one comes with its own, and since both old adapters turned out to be fine, it doesn't matter which one you send."
    ),
]

COMPENSATION = [
    U(
        "one more thing on the broken device. two weeks of this has cost me a lot of stress and one very awkward client presentation. is there any compensation? I've been paying for 1000 and getting 38 in the office"
    ),
    A(
        "That's a fair question. Let me check what I can offer for the period the loft satellite has been faulty."
    ),
    T(
        "billing_check_goodwill_eligibility",
        {"account_id": ACCOUNT, "reason": "faulty_equipment", "days_affected": 15},
        {
            "eligible": True,
            "max_credit_eur": 20.0,
            "rule": "GW-EQ-01: pro-rata equipment rental plus service credit for days with a confirmed equipment fault",
        },
        420,
    ),
    A(
        "Because the fault is confirmed in the logs, I can offer a credit of €20.00. That covers the Mesh Plus rental for the affected period plus a goodwill amount for the disruption, and it would appear on your December bill."
    ),
    U("20 euro. ok, that's something. yes please"),
    T(
        "billing_apply_credit",
        {
            "account_id": ACCOUNT,
            "amount": 20.0,
            "currency": "EUR",
            "reason_code": "GW-EQ-01",
            "note": "Loft Mesh Point brownout fault since ~2026-11-06 storm; replacement RPL-2611-40377",
        },
        {"creditId": "CR-90331", "status": "applied", "applies_to_invoice": "INV-2612-771045"},
        610,
    ),
    A("Done: a €20.00 credit, reference CR-90331, will show on your December invoice."),
    U("thanks. appreciated"),
]

LATE_FACTS = [
    U(
        "ah, actually, something I meant to ask at the very start and completely forgot with all this. we're moving next month. to Galway, my husband got a job there. we move on the 18th of December"
    ),
    A(
        "Congratulations on the move! Thanks for mentioning it, because it affects a few things. Would you like to keep your Acme service and move it to the new address?"
    ),
    U(
        "yes, ideally. I want to transfer everything, internet and tv. but I have no idea if you even have fibre there. it's a new build apartment in Knocknacarra"
    ),
    A("Do you have the Eircode of the new apartment? I can run a quick coverage check now."),
    U("H91 X4C8 I think. let me check the email from the estate agent... yes, H91 X4C8"),
    T(
        "coverage_check",
        {"eircode": "H91 X4C8"},
        {
            "eircode": "H91 X4C8",
            "fibre": "available",
            "max_mbps": 1000,
            "fixed_wireless": "available",
            "installation_required": True,
            "install_lead_time_working_days": 10,
        },
        690,
    ),
    A(
        "Good news: Fibre 1000 is available at H91 X4C8. It needs an installation visit, and the current lead time is about 10 working days, so it's worth arranging soon if you want internet from day one."
    ),
    U(
        "that's a relief. I can't work without internet. so how do I transfer it? and can I bring the mesh stuff?"
    ),
    A(
        "Yes, you'd bring the hub, both Mesh Points and the TV box with you. The move itself is handled by our house-move team, together with the installation date. As you're moving with us, there's no fee for it."
    ),
    U(
        "ok. actually, could someone from sales call me back about it? I want to talk through whether we even need the mesh in an apartment, and my husband wants a better tv package with more sport. and maybe there's a deal since we're moving anyway. I'd rather talk to a person for that"
    ),
    A(
        "Absolutely. I'll arrange a callback from our sales team to go through the move, the installation date, whether you need the mesh in the apartment, and the TV packages. When's a good time to call you?"
    ),
    U("weekday mornings are best, before 11. my mobile is 087 555 2194"),
    T(
        "crm_create_callback",
        {
            "account_id": ACCOUNT,
            "team": "sales",
            "reason": "home_move_transfer_and_upgrade",
            "phone": "+353875552194",
            "preferred_window": "weekdays 09:00-11:00",
            "notes": "Moving 18 Dec 2026 to new-build apartment in Knocknacarra, Galway, Eircode H91 X4C8 (Fibre 1000 available, install lead time ~10 working days). Wants to transfer broadband + TV. Questions: is mesh needed in an apartment; TV package with more sport; asks about a deal for moving. Replacement Mesh Point RPL-2611-40377 en route to current address.",
        },
        {
            "callbackId": "CB-558104",
            "scheduled_for": "2026-11-23T09:30:00Z",
            "team": "sales_home_moves",
        },
        812,
    ),
    A(
        "Done. Sales will call you on 087 555 2194 on Monday 23 November at around 9:30 am, reference CB-558104. I've noted the new Eircode, your move date of 18 December, that fibre is available there, and your questions about the mesh and the sport package, so you won't need to explain it all again."
    ),
    U("perfect. monday works"),
    A(
        "One thing to check: the replacement Mesh Point is going to Seaview Terrace on Tuesday. As you're there until 18 December, that still makes sense; just pack it with the rest of the kit when you move."
    ),
    U("yes that's fine, we're here for another 4 weeks"),
]

CLOSING = [
    A(
        "Here's a summary of everything we did today, so you have it in one place:\n"
        "• Loft satellite moved to the shelf by the stairs (signal -78 → -67 dBm)\n"
        "• Wi-Fi channels changed: 5 GHz 44 → 149, 2.4 GHz 6 → 11\n"
        "• Firmware updated to 6.3.0 on all three devices; automatic updates back on (2–5 am only)\n"
        "• Fast roaming switched on; guest network 'Okafor-Guest' created\n"
        "• DNS switched from your old provider's servers to automatic; UPnP on for the Xbox\n"
        "• TV box on an ethernet cable and updated to 3.9.1; live TV no longer buffering\n"
        "• Loft Mesh Point is faulty (power brownouts): replacement RPL-2611-40377 arriving Tuesday 24 November\n"
        "• €20.00 credit CR-90331 on your December bill for the faulty equipment\n"
        "• Sales callback CB-558104 on Monday 23 November, 9:30 am, about moving your service to H91 X4C8 on 18 December\n"
        "Loft speed went from 38 Mbps with 2.8% packet loss to 412 Mbps with none."
    ),
    U("wow. that's a lot. thanks for being so patient, honestly. I came in here ready to cancel"),
    A(
        "I'm glad you stuck with it, and thank you for all the running up and down the stairs. Is there anything else I can help with today?"
    ),
    U(
        "no I think that's everything. actually wait, will the automatic updates restart things at night? the kids' tablet downloads games overnight"
    ),
    A(
        "Updates only run between 2 and 5 am, and only when a new version comes out, a few times a year. The Wi-Fi would be off for a few minutes at most, and downloads simply resume."
    ),
    U("ok good. then that's really it"),
    A("Before you go: on a scale of 1 to 5, how would you rate today's chat?"),
    U("5. it would have been a 1 three hours ago"),
    A("Ha, I'll take it. Thank you!"),
    A(
        "You'll get a transcript of this chat by email. Enjoy the rest of your Saturday, Hannah, and good luck with the move!"
    ),
    U("thanks, bye!"),
    S("Chat closed by customer.", wait=6),
]

LAPTOP = [
    U(
        "my laptop is a macbook, is there a way I can see the signal myself? so I don't have to bother you every time"
    ),
    A(
        "Yes: hold the Option key and click the Wi-Fi icon in the menu bar, and you'll see extra details. What does it say for RSSI, Tx Rate and Channel?"
    ),
    U("RSSI -52, noise -92, Tx rate 780, PHY mode 802.11ax, channel 149 (5 GHz, 80 MHz)"),
    A(
        "Those are excellent numbers. RSSI is your laptop's signal from the loft satellite: anything better than -65 is good, and -52 is great. A Tx rate of 780 means a fast link, and 802.11ax means you're on Wi-Fi 6."
    ),
    U("and what would be bad?"),
    A(
        "If RSSI goes below about -70, or the Tx rate drops under 100, the connection is struggling. If you ever see that again, note the time; it helps us a lot when we look at the logs."
    ),
    U("great, I'll keep an eye on it. screenshotting this"),
    A("Good idea. A screenshot from a good moment makes a handy reference."),
]

SMART_PLUG = [
    U(
        "hm, one thing. my husband says the outdoor lights app shows 'device offline' for one of the plugs. is that because of us?",
        wait=120,
    ),
    A(
        "Quite possibly. Smart plugs like those remember the exact channel they first connected on, and some don't follow when the router moves, as we did with 2.4 GHz earlier. Let me see whether they're connected."
    ),
    T(
        "mesh_list_devices",
        {"account_id": ACCOUNT, "filter": "ESP_"},
        {
            "total": 1,
            "devices": [
                {
                    "name": "ESP_3A9F12",
                    "node": "hub",
                    "band": "2.4GHz",
                    "channel": 11,
                    "rssi_dbm": -65,
                }
            ],
        },
        380,
    ),
    A(
        "Only ESP_3A9F12 is connected; ESP_3A9F88 is missing. The fix is usually simple: unplug that smart plug for ten seconds and plug it back in, so it searches for the network again."
    ),
    U("it's outside by the front door. hang on"),
    U("done, the light on it is blinking blue", wait=100),
    A("Blinking blue means it's reconnecting. Give it a minute."),
    T(
        "mesh_list_devices",
        {"account_id": ACCOUNT, "filter": "ESP_"},
        {
            "total": 2,
            "devices": [
                {
                    "name": "ESP_3A9F12",
                    "node": "hub",
                    "band": "2.4GHz",
                    "channel": 11,
                    "rssi_dbm": -65,
                },
                {
                    "name": "ESP_3A9F88",
                    "node": "hub",
                    "band": "2.4GHz",
                    "channel": 11,
                    "rssi_dbm": -70,
                },
            ],
        },
        371,
    ),
    A(
        "Both plugs are back: ESP_3A9F88 has reconnected on channel 11. The app should show it online again."
    ),
    U("yep it's back. christmas is saved 🎄"),
]

BILL = [
    U("totally unrelated, but my bill went up this month. it was 79.99 and now it's 83.19. why?"),
    A("Let me check your recent invoices."),
    T(
        "billing_lookup_invoices",
        {"account_id": ACCOUNT, "from": "2026-09-01", "to": "2026-11-30"},
        {
            "invoices": [
                {
                    "invoiceId": "INV-2609-771045",
                    "amount": 79.99,
                    "currency": "EUR",
                    "status": "paid",
                },
                {
                    "invoiceId": "INV-2610-771045",
                    "amount": 79.99,
                    "currency": "EUR",
                    "status": "paid",
                },
                {
                    "invoiceId": "INV-2611-771045",
                    "amount": 83.19,
                    "currency": "EUR",
                    "status": "paid",
                    "lines": [
                        {"description": "Fibre 1000 + Mesh Plus", "amount": 79.99},
                        {"description": "Annual price adjustment (CPI 4.0%)", "amount": 3.20},
                    ],
                },
            ]
        },
        455,
    ),
    A(
        "The difference is the annual price adjustment. Your November invoice has a line for €3.20, which is 4.0% of your monthly price, in line with inflation. It applies to all plans each November and was announced by email and on your September bill."
    ),
    U("ugh. I don't remember that. can't really argue with it I suppose"),
    A(
        "I understand it's not welcome news. It's part of the contract terms, so I can't remove it, but it's the only change: your plan and the mesh rental are otherwise exactly the same."
    ),
    U("fine. back to the wifi then"),
]

LIVING_SPEED = [
    U(
        "can you do one of those speed tests downstairs too? just curious what the living room gets now"
    ),
    A("Sure, running one on the living room satellite."),
    T(
        "network_speed_test",
        {"account_id": ACCOUNT, "target": f"satellite:{SAT_LIVING}"},
        speed(702, 388, 6, 1, 0.0, target=f"satellite:{SAT_LIVING}"),
        22104,
    ),
    A("Living room satellite: 702 Mbps down, 388 up, 6 ms latency, no packet loss. Very healthy."),
    U("so downstairs was never really the problem"),
    A(
        "Right. Downstairs was fine all along apart from the TV box, which was a separate issue. The loft was the weak spot."
    ),
]

PARENTAL = [
    U(
        "while we wait. the kids' tablet. is there a way to turn the internet off on it at bedtime? they keep sneaking it into their room"
    ),
    A(
        "Yes, the Mesh Plus app has parental controls. I can set an internet schedule for one device, so it's offline at certain hours while everything else keeps working. What times did you have in mind?"
    ),
    U("school nights 8:30pm to 7am. weekends 10pm to 8am, we're not monsters"),
    T(
        "parental_controls_set_schedule",
        {
            "account_id": ACCOUNT,
            "device": "Galaxy-Tab-A7",
            "schedule": [
                {"nights": "sun-thu", "offline": "20:30-07:00"},
                {"nights": "fri-sat", "offline": "22:00-08:00"},
            ],
        },
        {"applied": True, "profile": "Kids tablet"},
        733,
    ),
    A(
        "Done. The Galaxy-Tab-A7 now goes offline from 8:30 pm to 7 am on Sunday to Thursday nights, and from 10 pm to 8 am on Friday and Saturday nights. You can change or pause it any time in the app under People > Kids tablet."
    ),
    U("they're going to hate me. perfect 😈"),
    A(
        "While I'm at it: the tablet is still connected to the loft satellite even though it's downstairs. Shall I move it to the living room node so it stops using the loft link?"
    ),
    U("yes"),
    T(
        "mesh_steer_client",
        {"account_id": ACCOUNT, "device": "Galaxy-Tab-A7", "target_node": SAT_LIVING},
        {"steered": True, "node": SAT_LIVING, "rssi_dbm": -54},
        2210,
    ),
    A(
        "Done, the tablet is on the living room satellite now, with a much stronger signal. With fast roaming on, devices like it should switch by themselves from now on."
    ),
]

SEGMENTS = [
    OPENING,
    TRIAGE,
    FIRST_SPEEDTEST,
    REBOOT,
    DEVICES,
    GUEST,
    CHANNELS,
    FIRMWARE,
    AFTER_FIRMWARE,
    LAPTOP,
    BACKHAUL,
    DNS,
    SMART_PLUG,
    BILL,
    BROWNOUT,
    TVBOX_SEGMENT,
    LIVING_SPEED,
    PARENTAL,
    REPLACEMENT,
    COMPENSATION,
    LATE_FACTS,
    CLOSING,
]


# --------------------------------------------------------------------------- assembly
def iso(t: dt.datetime) -> str:
    ms = t.microsecond // 1000
    return t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{ms:03d}Z" if ms else "Z")


def build() -> dict:
    t = START + dt.timedelta(seconds=2)
    turns: list[dict] = []
    events: list[dict] = []
    marks: dict[str, dt.datetime] = {}
    for item in (it for seg in SEGMENTS for it in seg):
        if item[0] == "mark":
            marks[item[1]] = t
            continue
        if item[0] == "event":
            ev = dict(item[1])
            if callable(ev.get("result")):  # a result that mentions times seen earlier in the chat
                ev["result"] = ev["result"](marks)
            t += dt.timedelta(milliseconds=1200)
            at = {"at": iso(t), "turn_index": len(turns) - 1}
            ordered = {
                k: ev[k]
                for k in ("type", "name", "arguments", "result", "succeeded", "duration_ms")
                if k in ev
            }
            ordered.update(at)
            ordered.update({k: v for k, v in ev.items() if k not in ordered})
            events.append(ordered)
            t += dt.timedelta(milliseconds=ev.get("duration_ms", 0) + 500)
            continue
        _, role, text, wait = item
        if turns:
            n = len(turns)
            if role == "user":  # reading the last message, then typing on a phone
                gap = 6 + len(text) / 5.5 + (n * 7) % 11
            else:  # the agent answers quickly; long answers take a little longer
                gap = 3 + len(text) / 60 + (n * 3) % 4
            t += dt.timedelta(seconds=gap + wait)
        t = t.replace(microsecond=0) + (
            dt.timedelta(seconds=1) if t.microsecond else dt.timedelta(0)
        )
        turns.append({"role": role, "text": text, "at": iso(t)})
    ended = t + dt.timedelta(seconds=4)
    duration = int((ended - START).total_seconds())
    return {
        "conversation_id": "c-2026-11-21-1107",
        "tenant_id": "acme",
        "agent_id": "support-bot",
        "agent_version": "v7",
        "channel": "chat",
        "started_at": iso(START),
        "ended_at": iso(ended),
        "outcome": "resolved",
        "termination_reason": "user_closed_chat",
        "turns": turns,
        "events": events,
        "dynamic_variables": {
            "system__agent_turns": sum(1 for x in turns if x["role"] == "agent"),
            "system__call_duration_secs": duration,
            "customer_name": "Hannah Okafor",
            "account_id": ACCOUNT,
            "plan": "Fibre 1000 + Mesh Plus",
            "customer_email": "hannah.okafor@fastmail.ie",
            "mesh_nodes": 3,
        },
        "metadata": {"source": "app_chat", "locale": "en-IE", "app_version": "5.14.2"},
    }


def main() -> None:
    conv = build()
    OUT.write_text(json.dumps(conv, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    late = next(i for i, x in enumerate(conv["turns"]) if "we're moving next month" in x["text"])
    print(
        f"wrote {OUT.name}: {len(conv['turns'])} turns, {len(conv['events'])} events, "
        f"{conv['started_at']} -> {conv['ended_at']}, move mentioned at turn {late}"
    )


if __name__ == "__main__":
    main()
