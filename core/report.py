"""A results page a person can open from the file system: `index.html` beside the outputs.

Plugins return `Artifact`s (an audio file, an image, a video, a 3D model, a download); `write_index`
lays them out by section. The page works from `file://` with no server and no CDN:
- audio / images / video are plain relative links (media elements may load local files);
- 3D models are inlined as `data:` URIs (browsers refuse `fetch` of `file://` URLs) and shown by
  Google's <model-viewer> web component, its UMD build copied beside the page from the npm install the
  set-up script makes (`.cache/web/`); without it the page shows the model's preview image instead.
- a small script checks every asset and writes the outcome into `#asset-status` (used by the tests).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .runtime import atomic_write

log = logging.getLogger("polydiff")

KINDS = ("audio", "image", "video", "model", "download")
VIEWER_JS = "model-viewer-umd.min.js"
_VIEWER_CANDIDATES = (
    os.environ.get("POLYDIFF_MODEL_VIEWER", ""),
    str(Path(__file__).resolve().parents[1] / ".cache/web/node_modules/@google/model-viewer/dist" / VIEWER_JS),
)


@dataclass
class Artifact:
    """One thing on the page. `path` is a file inside the page's folder (or below it)."""

    kind: str
    path: Path
    title: str
    caption: str = ""
    poster: Path | None = None  # for models: an image shown while loading / without WebGL

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"artifact kind {self.kind!r} unknown; use one of {', '.join(KINDS)}")
        self.path = Path(self.path)


def find_model_viewer() -> Path | None:
    for c in _VIEWER_CANDIDATES:
        if c and Path(c).is_file():
            return Path(c)
    return None


def _rel(path: Path, root: Path) -> str:
    try:
        return Path(os.path.relpath(Path(path).resolve(), root.resolve())).as_posix()
    except ValueError as err:  # another drive on Windows
        raise ValueError(f"{path} is not inside the page folder {root}") from err


def _card(a: Artifact, root: Path, viewer: bool) -> str:
    src = html.escape(_rel(a.path, root))
    title = html.escape(a.title)
    cap = f"<p class=cap>{html.escape(a.caption)}</p>" if a.caption else ""
    if a.kind == "audio":
        body = f'<audio controls preload=auto data-asset src="{src}"></audio>'
    elif a.kind == "image":
        body = f'<img data-asset src="{src}" alt="{title}">'
    elif a.kind == "video":
        body = f'<video controls loop muted autoplay playsinline preload=auto data-asset src="{src}"></video>'
    elif a.kind == "model":
        poster = f' poster="{html.escape(_rel(a.poster, root))}"' if a.poster else ""
        if viewer:
            data = base64.b64encode(Path(a.path).read_bytes()).decode()
            body = (f'<model-viewer data-asset data-file="{src}" src="data:model/gltf-binary;base64,{data}"'
                    f'{poster} camera-controls auto-rotate shadow-intensity=0.6 exposure=1.1 '
                    f'alt="{title}"></model-viewer>')
        elif a.poster:
            body = f'<img data-asset src="{html.escape(_rel(a.poster, root))}" alt="{title}">'
        else:
            body = "<p>(3D viewer not installed; download the file below)</p>"
        body += f'<p><a href="{src}" download>download {html.escape(Path(a.path).suffix)}</a></p>'
    else:
        body = f'<p><a href="{src}" download>{html.escape(Path(a.path).name)}</a></p>'
    return f"<figure class={a.kind}><figcaption>{title}</figcaption>{body}{cap}</figure>"


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222;background:#fafafa}
h1{margin-bottom:.2rem} h2{border-bottom:1px solid #ccc;padding-bottom:.3rem;margin-top:2rem}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:1rem}
figure{margin:0;padding:.7rem;background:#fff;border:1px solid #ddd;border-radius:8px}
figcaption{font-weight:600;margin-bottom:.4rem} .cap{color:#555;font-size:.9rem}
img,video{width:100%;display:block} audio{width:100%}
model-viewer{width:100%;height:320px;background:#eef}
#asset-status{font-family:monospace;color:#666}
"""

# Marks each asset ok / failed once it loads, and counts script errors; tests read #asset-status.
_CHECK = """
(function(){
  var errors=[]; window.addEventListener('error',function(e){errors.push(String(e.message||e.type));},true);
  var assets=[].slice.call(document.querySelectorAll('[data-asset]')), state={};
  function report(){var ok=0,bad=[];assets.forEach(function(a,i){if(state[i]===true)ok++;
    else if(state[i]===false)bad.push(a.getAttribute('data-file')||a.getAttribute('src'));});
    var el=document.getElementById('asset-status');
    el.textContent=JSON.stringify({total:assets.length,ok:ok,failed:bad,errors:errors});
    el.setAttribute('data-done',String(ok+bad.length===assets.length));}
  assets.forEach(function(a,i){
    function good(){state[i]=true;report();} function bad(){state[i]=false;report();}
    var t=a.tagName;
    if(t==='IMG'){ if(a.complete&&a.naturalWidth>0)good(); else {a.addEventListener('load',good);a.addEventListener('error',bad);} }
    else if(t==='AUDIO'||t==='VIDEO'){ if(a.readyState>=1)good(); else {a.addEventListener('loadedmetadata',good);a.addEventListener('error',bad);} }
    else { a.addEventListener('load',good); a.addEventListener('error',bad); }
  });
  report();
})();
"""


def _json_in_html(obj) -> str:
    return json.dumps(obj).replace("</", "<\\/")


def write_index(outdir, sections: dict[str, list[Artifact]], title: str = "polydiff results",
                intro: str = "") -> Path:
    """Write `outdir/index.html` (atomically) for `sections` = {heading: [artifacts]}; returns its path."""
    root = Path(outdir)
    root.mkdir(parents=True, exist_ok=True)
    arts = [a for items in sections.values() for a in items]
    for a in arts:
        if not Path(a.path).is_file():
            raise FileNotFoundError(f"{a.path}: artifact {a.title!r} does not exist; nothing written")
    viewer = False
    if any(a.kind == "model" for a in arts):
        js = find_model_viewer()
        if js is None:
            log.warning("model-viewer not installed (run scripts/bootstrap.sh); 3D models shown as images")
        else:
            shutil.copyfile(js, root / VIEWER_JS)
            viewer = True
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style>"]
    if viewer:
        parts.append(f'<script src="{VIEWER_JS}"></script>')
    parts.append(f"</head><body><h1>{html.escape(title)}</h1>")
    if intro:
        parts.append(f"<p>{html.escape(intro)}</p>")
    for heading, items in sections.items():
        parts.append(f"<h2>{html.escape(heading)}</h2><div class=grid>")
        parts += [_card(a, root, viewer) for a in items]
        parts.append("</div>")
    parts.append('<p id=asset-status data-done=false></p>')
    parts.append(f"<script>{_CHECK}</script>")
    parts.append(f"<script type=application/json id=manifest>"
                 f"{_json_in_html([{'kind': a.kind, 'file': _rel(a.path, root), 'title': a.title} for a in arts])}"
                 f"</script></body></html>")
    path = root / "index.html"
    return atomic_write(path, lambda tmp: tmp.write_text("\n".join(parts), encoding="utf-8"))
