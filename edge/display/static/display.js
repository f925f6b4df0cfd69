// The traveller's screen: renders what the display server pushes over Server-Sent Events.
// The page sends nothing anywhere: it only reads /config.json and /events. Its own watchdog shows
// "out of service" when the stream's heartbeat stops (daemon or display process gone), and the
// EventSource reconnects by itself: the screen recovers without a reload.
"use strict";

const ICONS = {
  welcome_exit: "face", welcome_entry: "passport", welcome_boarding: "boarding", look_at_camera: "face",
  come_closer: "closer", step_back: "back", move_left: "left", move_right: "right", look_straight: "straight",
  one_person: "one", please_wait: "wait", proceed: "proceed", see_officer: "officer",
  out_of_service: "offline", closed: "closed", emergency: "emergency", alarm: "alarm",
};
const TONES = { proceed: "proceed", see_officer: "officer", alarm: "stop", emergency: "emergency",
  out_of_service: "offline", closed: "offline" };
const WELCOME = new Set(["welcome_exit", "welcome_entry", "welcome_boarding"]);
// Screens that show the camera mirror (when the display has one): while the traveller is being placed.
const MIRROR_SCREENS = new Set(["look_at_camera", "come_closer", "step_back", "move_left", "move_right",
  "look_straight"]);

// Measurements for `egate bench display` and the tests (never sent anywhere).
const probe = (window.__egate = { loadId: String(Math.random()).slice(2), renders: [], screen: null,
  lang: null, offline: true, messages: 0, mirrorFrames: 0, mirrorShown: false, mirrorShows: [] });

let cfg = null;
let current = { screen: "out_of_service", seq: -1, at: 0, mode: "exit", language: null, connected: false };
let lastBeat = 0;
let offline = true;
let shownLang = null;
let chosen = null; // { code, at }: picked on the touch screen
let cycleIndex = 0;
let cycleAt = 0;
let drawn = "";
let audio = null;
let mirror = null; // EventSource of camera frames while a positioning screen shows
let mirrorAt = 0; // capture time (ms) of the frame being decoded
const pinned = new URLSearchParams(location.search).get("lang");

function now() { return performance.now(); }

function pickLanguage(screen) {
  const offered = cfg.languages;
  if (pinned && offered.includes(pinned)) return pinned;
  if (chosen && now() - chosen.at < cfg.choice_hold_s * 1000) return chosen.code;
  chosen = null;
  if (current.language && offered.includes(current.language)) return current.language;
  if (WELCOME.has(screen) && !offline) return offered[cycleIndex % offered.length];
  // During a traveller's session: stay in the language shown when it began.
  return shownLang || cfg.default_language;
}

function draw(fromLane) {
  const screen = offline ? "out_of_service" : current.screen;
  const lang = pickLanguage(screen);
  const cat = cfg.catalogues[lang];
  const key = screen + "|" + lang;
  const root = document.documentElement;
  if (key !== drawn) {
    root.lang = cat.bcp47;
    root.dir = cat.dir;
    document.body.dataset.screen = screen;
    document.body.dataset.tone = TONES[screen] || "info";
    document.getElementById("title").textContent = cat.strings[screen + ".title"];
    document.getElementById("text").textContent = cat.strings[screen + ".text"];
    document.getElementById("icon-use").setAttribute("href", "#i-" + ICONS[screen]);
    document.getElementById("icon").setAttribute("class", "icon " + ICONS[screen]);
    document.getElementById("languages").setAttribute("aria-label", cat.strings["ui.language"]);
    for (const b of document.querySelectorAll("#languages button")) {
      b.setAttribute("aria-pressed", String(b.dataset.code === lang));
    }
    if (drawn.split("|")[0] !== screen) {
      playTone(screen);
      speak(screen, cat);
    }
    drawn = key;
  }
  updateMirror(screen, cat);
  shownLang = lang;
  probe.screen = screen;
  probe.lang = lang;
  probe.offline = offline;
  if (fromLane && current.seq >= 0) {
    const seq = current.seq;
    const at = current.at * 1000;
    // The change is on screen at the next frame: stamp it there (same clock base as the daemon's).
    requestAnimationFrame(() => {
      probe.renders.push({ seq, at, shown: performance.timeOrigin + performance.now(), screen });
      if (probe.renders.length > 2000) probe.renders.splice(0, 1000);
    });
  }
}

// The camera picture streams only while a positioning screen shows: leaving it closes the stream (the
// display then stops reading the daemon's frames). The picture appears with its first frame.
function updateMirror(screen, cat) {
  const figure = document.getElementById("mirror");
  const img = document.getElementById("mirror-img");
  if (cfg.mirror && !offline && MIRROR_SCREENS.has(screen)) {
    img.alt = cat.strings["ui.mirror"];
    if (mirror) return;
    mirror = new EventSource("/mirror/events");
    mirror.addEventListener("frame", (event) => {
      const frame = JSON.parse(event.data);
      mirrorAt = frame.at * 1000;
      img.src = "data:image/jpeg;base64," + frame.jpeg;
      probe.mirrorFrames += 1;
      if (figure.hidden) {
        figure.hidden = false;
        document.body.dataset.mirror = "on";
        probe.mirrorShown = true;
      }
    });
    return;
  }
  if (mirror) {
    mirror.close();
    mirror = null;
  }
  img.removeAttribute("src");
  figure.hidden = true;
  document.body.dataset.mirror = "off";
  probe.mirrorShown = false;
}

// Each picture's age on screen (capture -> painted), for `egate bench display` (never sent anywhere).
function stampMirror() {
  const at = mirrorAt;
  if (!at) return;
  requestAnimationFrame(() => {
    probe.mirrorShows.push({ at, shown: performance.timeOrigin + performance.now() });
    if (probe.mirrorShows.length > 2000) probe.mirrorShows.splice(0, 1000);
  });
}

function playTone(screen) {
  if (!cfg.audio) return;
  const notes = { proceed: [660, 880], see_officer: [440, 330], alarm: [880, 880, 880] }[screen];
  if (!notes) return;
  try {
    audio = audio || new AudioContext();
    notes.forEach((hz, i) => {
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      const t = audio.currentTime + i * 0.22;
      osc.frequency.value = hz;
      gain.gain.setValueAtTime(0.0001, t);
      gain.gain.exponentialRampToValueAtTime(0.3, t + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, t + 0.2);
      osc.connect(gain).connect(audio.destination);
      osc.start(t);
      osc.stop(t + 0.21);
    });
  } catch (e) {
    /* no audio device: the screen still says it */
  }
}

// Spoken prompts only with a voice on the device itself (localService): nothing goes to a cloud voice.
function speak(screen, cat) {
  if (!cfg.speech || !("speechSynthesis" in window)) return;
  const prefix = cat.bcp47.slice(0, 2).toLowerCase();
  const voice = speechSynthesis.getVoices().find((v) => v.localService && v.lang.toLowerCase().startsWith(prefix));
  if (!voice) return;
  speechSynthesis.cancel();
  const utterance = new SpeechSynthesisUtterance(cat.strings[screen + ".title"] + ". " + cat.strings[screen + ".text"]);
  utterance.voice = voice;
  utterance.lang = voice.lang;
  speechSynthesis.speak(utterance);
}

function onLane(event) {
  lastBeat = now();
  probe.messages += 1;
  const msg = JSON.parse(event.data);
  const wasWelcome = WELCOME.has(current.screen);
  current = msg;
  offline = !msg.connected;
  if (WELCOME.has(msg.screen) && !wasWelcome) cycleAt = now();
  draw(true);
}

function onBeat() {
  lastBeat = now();
  if (offline && current.connected) {
    offline = false;
    draw(false);
  }
}

function connect() {
  const source = new EventSource("/events");
  source.addEventListener("lane", onLane);
  source.addEventListener("hb", onBeat);
  source.onerror = () => {
    // A refused or failed stream may end in CLOSED: start a new one (network errors retry by themselves).
    if (source.readyState === EventSource.CLOSED) setTimeout(connect, 1000);
  };
}

function watchdog() {
  const t = now();
  if (!offline && t - lastBeat > cfg.stale_after_s * 1000) {
    offline = true;
    draw(false);
    return;
  }
  if (!offline && WELCOME.has(current.screen) && t - cycleAt > cfg.idle_cycle_s * 1000) {
    cycleAt = t;
    cycleIndex += 1;
    draw(false);
  }
  if (chosen && t - chosen.at >= cfg.choice_hold_s * 1000) draw(false);
}

function buildLanguageButtons() {
  const nav = document.getElementById("languages");
  for (const code of cfg.languages) {
    const cat = cfg.catalogues[code];
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = cat.name;
    b.lang = cat.bcp47;
    b.dir = cat.dir;
    b.dataset.code = code;
    b.setAttribute("aria-pressed", "false");
    b.addEventListener("click", () => {
      chosen = { code, at: now() };
      draw(false);
    });
    nav.appendChild(b);
  }
}

async function start() {
  cfg = await (await fetch("/config.json", { cache: "no-store" })).json();
  document.body.dataset.direction = cfg.proceed_direction;
  cycleIndex = Math.max(0, cfg.languages.indexOf(cfg.default_language));
  buildLanguageButtons();
  document.getElementById("mirror-img").addEventListener("load", stampMirror);
  draw(false);
  connect();
  setInterval(watchdog, 200);
}

start();
