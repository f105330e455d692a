"""Offscreen OpenGL rendering of textured meshes: smooth shading, a z-buffer, shadows.

Runs on any OpenGL 3.3 context moderngl can open headless; on a machine without a GPU that
is Mesa's llvmpipe through EGL (Debian: libegl1 libgl1-mesa-dri). One context per process,
opened on first use, so each data-generation worker process opens its own.

Shading happens per pixel in linear light: albedo texture (sRGB, alpha = specular mask)
times a hemisphere ambient term and per-vertex ambient occlusion, plus up to four
directional lights with wrapped Lambert diffuse and Blinn-Phong specular; the first light
casts shadows through a shadow map. Images are rendered `ssaa` times larger and averaged
down, so edges are anti-aliased and pixel centres stay where the camera puts them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import cv2
import numpy as np

MAX_LIGHTS = 4

_VERT = """
#version 330
uniform mat4 proj;
uniform mat4 light_mvp;
in vec3 in_pos;
in vec3 in_normal;
in vec2 in_uv;
in float in_ao;
out vec3 v_pos;
out vec3 v_normal;
out vec2 v_uv;
out float v_ao;
out vec4 v_light;
void main() {
    v_pos = in_pos;
    v_normal = in_normal;
    v_uv = in_uv;
    v_ao = in_ao;
    v_light = light_mvp * vec4(in_pos, 1.0);
    gl_Position = proj * vec4(in_pos, 1.0);
}
"""

# The light count is a compile-time constant (one program per count): a loop over a
# uniform count runs as a masked loop with indexed uniform loads in llvmpipe.
_FRAG = """
#version 330
const int n_lights = N_LIGHTS;
uniform sampler2D albedo;
uniform sampler2DShadow shadow_map;
uniform vec3 light_dir[4];
uniform vec3 light_col[4];
uniform vec3 sky;
uniform vec3 ground;
uniform float shininess;
uniform float spec_scale;
uniform float wrap;
uniform float shadow_soft;
uniform int use_shadow;
uniform vec3 tint;
in vec3 v_pos;
in vec3 v_normal;
in vec2 v_uv;
in float v_ao;
in vec4 v_light;
out vec4 frag;
// The shadow map is sampled with hardware depth comparison and bilinear filtering: each
// tap is a 2x2 percentage-closer filter, four taps spread by shadow_soft texels.
float lit_by_key(vec3 n) {
    if (use_shadow == 0) return 1.0;
    vec3 p = v_light.xyz * 0.5 + 0.5;
    if (p.x <= 0.0 || p.x >= 1.0 || p.y <= 0.0 || p.y >= 1.0) return 1.0;
    float z = p.z - (0.002 + 0.004 * (1.0 - abs(dot(n, light_dir[0]))));
    vec2 r = 0.5 * shadow_soft / vec2(textureSize(shadow_map, 0));
    return 0.25 * (texture(shadow_map, vec3(p.xy + vec2(-r.x, -r.y), z))
                   + texture(shadow_map, vec3(p.xy + vec2(r.x, -r.y), z))
                   + texture(shadow_map, vec3(p.xy + vec2(-r.x, r.y), z))
                   + texture(shadow_map, vec3(p.xy + vec2(r.x, r.y), z)));
}
void main() {
    vec4 a = texture(albedo, v_uv);
    vec3 srgb = a.rgb * tint;
    vec3 base = srgb * srgb;  // display gamma 2 -> linear
    vec3 n = normalize(v_normal);
    if (!gl_FrontFacing) n = -n;
    vec3 v = normalize(-v_pos);
    vec3 col = base * mix(ground, sky, 0.5 + 0.5 * n.y) * v_ao;
    // Once, outside the loop: llvmpipe would evaluate a call under a per-light
    // condition for every light.
    float key_lit = lit_by_key(n);
    for (int i = 0; i < n_lights; i++) {
        vec3 l = light_dir[i];
        float sh = (i == 0) ? key_lit : 1.0;
        float nl = max((dot(n, l) + wrap) / (1.0 + wrap), 0.0);
        vec3 h = normalize(l + v);
        float sp = pow(max(dot(n, h), 0.0), shininess) * step(0.0, dot(n, l));
        col += light_col[i] * sh * (base * nl + spec_scale * a.a * sp);
    }
    frag = vec4(col, 1.0);
}
"""

_SHADOW_VERT = """
#version 330
uniform mat4 light_mvp;
in vec3 in_pos;
void main() { gl_Position = light_mvp * vec4(in_pos, 1.0); }
"""

_SHADOW_FRAG = """
#version 330
void main() { }
"""


class RenderError(RuntimeError):
    """The OpenGL context could not be opened or a draw failed."""


@dataclass
class Mesh:
    """Triangles in the camera frame (x right, y up, camera at the origin looking down -z).

    `uv` indexes `texture` (H, W, 4) uint8 RGBA (alpha = specular mask); `ao` (N,) scales
    the ambient light per vertex. `shininess` and `spec` set the Blinn-Phong lobe.
    """

    positions: np.ndarray  # (N, 3) float
    normals: np.ndarray  # (N, 3) float, not necessarily unit length
    triangles: np.ndarray  # (M, 3) int
    uv: np.ndarray  # (N, 2) in [0, 1]
    texture: np.ndarray  # (H, W, 4) uint8 RGBA
    ao: np.ndarray | None = None
    shininess: float = 20.0
    spec: float = 0.3
    casts_shadow: bool = True
    tint: tuple = (1.0, 1.0, 1.0)


@dataclass
class Lighting:
    """Directional lights (unit vectors toward the light, camera frame) and ambient."""

    directions: np.ndarray  # (K, 3)
    colours: np.ndarray  # (K, 3) linear RGB intensities
    sky: np.ndarray = field(default_factory=lambda: np.array([0.35, 0.35, 0.38]))
    ground: np.ndarray = field(default_factory=lambda: np.array([0.15, 0.13, 0.12]))
    wrap: float = 0.25  # wrapped diffuse: light bleeding past the terminator (skin)
    shadow_soft: float = 1.5  # shadow-map filter radius in texels (small = hard shadow)
    shadows: bool = True


def vertex_normals(positions: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals (unit length) of an outward-oriented mesh."""
    p = positions
    raw = np.cross(p[triangles[:, 1]] - p[triangles[:, 0]], p[triangles[:, 2]] - p[triangles[:, 0]])
    flat = triangles.ravel()
    vn = np.stack([np.bincount(flat, np.repeat(raw[:, c], 3), len(p)) for c in range(3)], axis=1)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)


def projection(focal: float, cx: float, cy: float, width: int, height: int,
               near: float, far: float) -> np.ndarray:
    """Pinhole projection to clip space for 0-based pixel centres (image y down).

    Pixel (x, y) = (cx + focal * X / -Z, cy - focal * Y / -Z); the pixel centre x = i maps
    to NDC (2 (i + 0.5) / width) - 1, so the rendered image needs only a vertical flip.
    """
    m = np.zeros((4, 4))
    m[0, 0] = 2.0 * focal / width
    m[0, 2] = -(2.0 * (cx + 0.5) / width - 1.0)
    m[1, 1] = 2.0 * focal / height
    m[1, 2] = -(1.0 - 2.0 * (cy + 0.5) / height)
    m[2, 2] = -(far + near) / (far - near)
    m[2, 3] = -2.0 * far * near / (far - near)
    m[3, 2] = -1.0
    return m


def _light_matrix(direction: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Orthographic light-space transform framing `points`, looking along -direction."""
    d = direction / np.linalg.norm(direction)
    up = np.array([0.0, 1.0, 0.0]) if abs(d[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    x = np.cross(up, d)
    x /= np.linalg.norm(x)
    y = np.cross(d, x)
    rot = np.stack([x, y, d])  # rows: light-frame axes; z points toward the light
    q = points @ rot.T
    lo, hi = q.min(axis=0), q.max(axis=0)
    lo, hi = lo - 1.0, hi + 1.0
    m = np.eye(4)
    m[:3, :3] = rot
    s = np.diag([2.0 / (hi[0] - lo[0]), 2.0 / (hi[1] - lo[1]), -2.0 / (hi[2] - lo[2]), 1.0])
    t = np.eye(4)
    t[:3, 3] = [-(hi[0] + lo[0]) / 2, -(hi[1] + lo[1]) / 2, -(hi[2] + lo[2]) / 2]
    # z toward the light: the nearest surface to the light has the largest q_z -> depth 0.
    return s @ t @ m


class Renderer:
    """One OpenGL context and its programs; `render` draws meshes into a float image."""

    def __init__(self):
        try:
            import moderngl
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RenderError("the synthetic renderer needs moderngl (pip install moderngl)") from exc
        try:
            self.ctx = moderngl.create_standalone_context(backend="egl")
        except Exception as exc:  # noqa: BLE001 - moderngl raises plain Exception subclasses
            try:
                self.ctx = moderngl.create_standalone_context()
            except Exception:  # noqa: BLE001
                raise RenderError(
                    "no offscreen OpenGL context (EGL): install Mesa, e.g. 'apt-get install "
                    f"libegl1 libgl1-mesa-dri' ({exc})") from exc
        self.moderngl = moderngl
        self._programs = {}
        self.shadow_prog = self.ctx.program(vertex_shader=_SHADOW_VERT, fragment_shader=_SHADOW_FRAG)
        self._targets = {}
        self.shadow_size = 512
        self.shadow_tex = self.ctx.depth_texture((self.shadow_size, self.shadow_size))
        self.shadow_tex.compare_func = "<="  # sampled as sampler2DShadow
        self.shadow_tex.filter = (moderngl.LINEAR, moderngl.LINEAR)
        self.shadow_fbo = self.ctx.framebuffer(depth_attachment=self.shadow_tex)

    def _program(self, n_lights: int):
        """The shading program for `n_lights` directional lights (compiled on first use)."""
        if n_lights not in self._programs:
            frag = _FRAG.replace("N_LIGHTS", str(int(n_lights)))
            self._programs[n_lights] = self.ctx.program(vertex_shader=_VERT, fragment_shader=frag)
        return self._programs[n_lights]

    def _target(self, width: int, height: int):
        key = (width, height)
        if key not in self._targets:
            colour = self.ctx.renderbuffer((width, height), components=4, dtype="f4")
            depth = self.ctx.depth_renderbuffer((width, height))
            self._targets[key] = self.ctx.framebuffer(color_attachments=[colour],
                                                      depth_attachment=depth)
        return self._targets[key]

    def _vao(self, prog, mesh: Mesh, with_attrs: bool):
        ctx = self.ctx
        idx = ctx.buffer(np.ascontiguousarray(mesh.triangles, dtype="i4").tobytes())
        pos = ctx.buffer(np.ascontiguousarray(mesh.positions, dtype="f4").tobytes())
        content = [(pos, "3f", "in_pos")]
        bufs = [idx, pos]
        if with_attrs:
            ao = mesh.ao if mesh.ao is not None else np.ones(len(mesh.positions))
            for arr, fmt, name in ((mesh.normals, "3f", "in_normal"), (mesh.uv, "2f", "in_uv"),
                                   (ao, "f", "in_ao")):
                b = ctx.buffer(np.ascontiguousarray(arr, dtype="f4").tobytes())
                content.append((b, fmt, name))
                bufs.append(b)
        return ctx.vertex_array(prog, content, index_buffer=idx), bufs

    def depth_only(self, meshes: list, focal: float, cx: float, cy: float, size: int,
                   near: float = 10.0, far: float = 10000.0) -> np.ndarray:
        """(size, size) distance along -z of the nearest surface, +inf where none."""
        mgl = self.moderngl
        key = ("depth", size)
        if key not in self._targets:
            tex = self.ctx.depth_texture((size, size))
            self._targets[key] = (tex, self.ctx.framebuffer(depth_attachment=tex))
        tex, fbo = self._targets[key]
        fbo.use()
        fbo.clear(depth=1.0)
        self.ctx.enable(mgl.DEPTH_TEST)
        proj = projection(focal, cx, cy, size, size, near, far)
        self.shadow_prog["light_mvp"].write(proj.T.astype("f4").tobytes())
        for m in meshes:
            vao, bufs = self._vao(self.shadow_prog, m, with_attrs=False)
            vao.render(mgl.TRIANGLES)
            vao.release()
            for b in bufs:
                b.release()
        zbuf = np.frombuffer(tex.read(), dtype=np.float32).reshape(size, size)[::-1]
        return _linear_depth(zbuf, near, far)

    def render(self, meshes: list, lighting: Lighting, focal: float, cx: float, cy: float,
               size: int, ssaa: int = 2, near: float = 10.0, far: float = 10000.0,
               depth: bool = True) -> tuple:
        """(rgb, alpha, depth): rgb float32 (size, size, 3) display-encoded and premultiplied
        by alpha (0 where nothing was drawn), alpha its coverage, depth (size, size) the
        distance along -z in scene units with +inf where nothing was drawn (None when
        `depth` is False, which saves reading and reducing the depth buffer).

        The image is rendered at `size * ssaa` and area-averaged; depth is the nearest of
        each pixel's samples.
        """
        mgl = self.moderngl
        big = size * ssaa
        bcx, bcy = (cx + 0.5) * ssaa - 0.5, (cy + 0.5) * ssaa - 0.5
        proj = projection(focal * ssaa, bcx, bcy, big, big, near, far)
        dirs = np.asarray(lighting.directions, float).reshape(-1, 3)[:MAX_LIGHTS]
        cols = np.asarray(lighting.colours, float).reshape(-1, 3)[:MAX_LIGHTS]
        dirs = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
        ctx = self.ctx
        ctx.enable(mgl.DEPTH_TEST)
        ctx.disable(mgl.CULL_FACE)
        garbage = []
        use_shadow = bool(lighting.shadows and len(dirs))
        light_mvp = np.eye(4)
        if use_shadow:
            casters = [m for m in meshes if m.casts_shadow]
            if casters:
                pts = np.vstack([m.positions for m in casters])
                light_mvp = _light_matrix(dirs[0], pts)
                self.shadow_fbo.use()
                self.shadow_fbo.clear(depth=1.0)
                self.shadow_prog["light_mvp"].write(light_mvp.T.astype("f4").tobytes())
                for m in casters:
                    vao, bufs = self._vao(self.shadow_prog, m, with_attrs=False)
                    vao.render(mgl.TRIANGLES)
                    garbage.append((vao, bufs))
            else:
                use_shadow = False
        fbo = self._target(big, big)
        fbo.use()
        fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        prog = self._program(len(dirs))
        uniforms = {"proj": proj.T, "light_mvp": light_mvp.T, "light_dir": dirs,
                    "light_col": cols, "sky": tuple(float(v) for v in lighting.sky),
                    "ground": tuple(float(v) for v in lighting.ground),
                    "wrap": float(lighting.wrap), "shadow_soft": float(lighting.shadow_soft),
                    "use_shadow": int(use_shadow), "albedo": 0, "shadow_map": 1}
        for name, value in uniforms.items():
            _set_uniform(prog, name, value)
        self.shadow_tex.use(location=1)
        for m in meshes:
            tex = ctx.texture((m.texture.shape[1], m.texture.shape[0]), 4,
                              np.ascontiguousarray(m.texture[::-1], dtype=np.uint8).tobytes())
            tex.filter = (mgl.LINEAR, mgl.LINEAR)
            tex.repeat_x = tex.repeat_y = False
            tex.use(location=0)
            _set_uniform(prog, "shininess", float(m.shininess))
            _set_uniform(prog, "spec_scale", float(m.spec))
            _set_uniform(prog, "tint", tuple(float(v) for v in m.tint))
            uv = np.asarray(m.uv, float).copy()
            uv[:, 1] = 1.0 - uv[:, 1]  # texture rows were flipped on upload
            vao, bufs = self._vao(prog, Mesh(m.positions, m.normals, m.triangles, uv, m.texture,
                                             m.ao), with_attrs=True)
            vao.render(mgl.TRIANGLES)
            garbage.append((vao, bufs + [tex]))
        raw = np.frombuffer(fbo.read(components=4, dtype="f4"), dtype=np.float32)
        img = raw.reshape(big, big, 4)[::-1]
        zbuf = None
        if depth:
            zbuf = np.frombuffer(fbo.read(components=1, attachment=-1, dtype="f4"), np.float32)
            zbuf = zbuf.reshape(big, big)[::-1]
        for vao, bufs in garbage:
            vao.release()
            for b in bufs:
                b.release()
        rgba = img
        if ssaa > 1:
            rgba = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
            if depth:
                zbuf = zbuf.reshape(size, ssaa, size, ssaa).min(axis=(1, 3))
        rgb = np.sqrt(np.clip(rgba[..., :3], 0.0, None))  # linear -> display (gamma 2)
        dist = _linear_depth(zbuf, near, far) if depth else None
        return rgb, np.ascontiguousarray(rgba[..., 3]), dist


def _set_uniform(prog, name: str, value) -> None:
    """Set a uniform if the compiled program kept it (a program for fewer lights drops the
    ones it does not read). Arrays are written as float32; (k, 3) light arrays are cut or
    zero-padded to the length the program kept. Scalars and tuples are assigned."""
    uniform = prog.get(name, None)
    if uniform is None:
        return
    if isinstance(value, np.ndarray):
        if value.ndim == 2 and value.shape[1] == 3:
            rows = np.zeros((uniform.array_length, 3))
            n = min(len(rows), len(value))
            rows[:n] = value[:n]
            value = rows
        uniform.write(np.ascontiguousarray(value, np.float32).tobytes())
    else:
        uniform.value = value


def _linear_depth(zbuf: np.ndarray, near: float, far: float) -> np.ndarray:
    """Depth-buffer values (0..1, perspective) -> distance along -z; +inf where empty."""
    ndc = zbuf.astype(np.float32) * 2.0 - 1.0
    dist = np.float32(2.0 * far * near) / (np.float32(far + near) - ndc * np.float32(far - near))
    dist[zbuf >= 1.0] = np.inf
    return dist


_RENDERER: dict = {}


def renderer() -> Renderer:
    """This process's renderer (opened on first use; one per process id, so forks reopen)."""
    pid = os.getpid()
    if pid not in _RENDERER:
        _RENDERER.clear()
        _RENDERER[pid] = Renderer()
    return _RENDERER[pid]
