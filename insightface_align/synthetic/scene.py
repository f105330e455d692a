"""Meshes and lights of one synthetic portrait: head, ears, neck and clothes, hair, hat,
glasses; all in the camera frame (camera at the origin looking down -z), ready for
gl_render.Renderer.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np
import scipy.sparse

from .camera import Camera, rotation
from .gl_render import Lighting, Mesh, vertex_normals
from .look import Look
from .skin import U_MAX, bake_head_texture, hairline_y, uv_of_param
from .template import MOUTH, U_SCALE, TemplateHead


def _eye_frame(points: np.ndarray, cam: Camera) -> np.ndarray:
    """Model points -> camera-frame points (camera at the origin looking down -z)."""
    q = cam.to_view(points)
    q[:, 2] -= cam.dist
    return q


def _body_camera(cam: Camera) -> Camera:
    """The torso follows the head only part of the way."""
    return Camera(cam.pitch * 0.2, cam.yaw * 0.35, cam.roll * 0.3, cam.dist, cam.focal, cam.cx, cam.cy)


def _solid_texture(rgb, spec: float = 0.3, noise: float = 0.0, rng=None, size: int = 8) -> np.ndarray:
    tex = np.empty((size, size, 4), np.float32)
    tex[..., :3] = np.asarray(rgb, np.float32)
    if noise and rng is not None:
        tex[..., :3] *= 1.0 + noise * rng.standard_normal((size, size, 1)).astype(np.float32)
    tex[..., 3] = spec
    return np.clip(tex * 255, 0, 255).astype(np.uint8)


def _grid_mesh(points: np.ndarray, rows: int, cols: int, closed: bool = False) -> np.ndarray:
    """Triangles of a rows x cols grid of points (row-major); `closed` wraps the columns."""
    tri = []
    last = cols if closed else cols - 1
    for r in range(rows - 1):
        for c in range(last):
            a, b = r * cols + c, r * cols + (c + 1) % cols
            tri += [[a, a + cols, b], [b, a + cols, b + cols]]
    return np.array(tri, dtype=np.int64)


@functools.lru_cache(maxsize=4)
def _neighbour_mean(triangles_key: bytes, n: int) -> scipy.sparse.csr_matrix:
    """(n, n) operator averaging each vertex's edge neighbours (an edge counted once per
    triangle side it lies on), built once per mesh topology."""
    tri = np.frombuffer(triangles_key, np.int64).reshape(-1, 3)
    e = np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]])
    e = np.concatenate([e, e[:, ::-1]])
    adj = scipy.sparse.csr_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    deg = np.maximum(np.asarray(adj.sum(axis=1)).ravel(), 1.0)
    return scipy.sparse.diags(1.0 / deg) @ adj


def _concavity_ao(positions: np.ndarray, normals: np.ndarray, triangles: np.ndarray,
                  strength: float = 0.05, rounds: int = 4) -> np.ndarray:
    """Cheap ambient occlusion: how far each vertex sits below its smoothed neighbourhood."""
    mean = _neighbour_mean(np.ascontiguousarray(triangles, np.int64).tobytes(), len(positions))
    smooth = positions
    for _ in range(rounds):
        smooth = mean @ smooth
    depth = np.einsum("ij,ij->i", smooth - positions, normals)
    return np.clip(1.0 - strength * np.maximum(depth, 0.0), 0.35, 1.0)


def head_mesh(head: TemplateHead, verts: np.ndarray, cam: Camera, look: Look,
              rng: np.random.Generator) -> Mesh:
    """The textured head, with scalp hair raised off the skull by the hair's volume."""
    pos = _eye_frame(verts, cam)
    normals = vertex_normals(pos, head.triangles)
    if look.hairstyle != "bald":
        u, y = head.param[:, 0] * U_SCALE, head.param[:, 1]
        lift = np.clip((y - hairline_y(u, look) - 2.0) / 12.0, 0.0, 1.0) * look.hair_volume
        pos = pos + normals * lift[:, None]
        normals = vertex_normals(pos, head.triangles)
    ao = _concavity_ao(pos, normals, head.triangles)
    tex = bake_head_texture(look, rng)
    # The mouth opening is a hole: teeth and the cavity behind it are geometry of their own.
    tri = head.triangles[head.region != MOUTH]
    return Mesh(pos, normals, tri, uv_of_param(head.param), tex, ao=ao,
                shininess=look.shininess, spec=look.shine)


def mouth_meshes(verts: np.ndarray, cam: Camera, look: Look, rng: np.random.Generator) -> list:
    """The mouth cavity (a dark ellipsoid behind the lips) and upper and lower teeth.

    Teeth are strips along a dental arch anchored on the morphed inner-lip landmarks, so
    the lower row follows the jaw when the mouth opens.
    """
    inner = verts[60:68]
    centre = inner.mean(axis=0)
    half = 0.5 * np.linalg.norm(inner[4] - inner[0])
    # Cavity: an ellipsoid behind the lips, seen through the opening.
    rows, cols = 8, 16
    th = np.linspace(0.05, np.pi - 0.05, rows)[:, None]
    ph = np.linspace(0, 2 * np.pi, cols, endpoint=False)[None]
    gap = max(np.linalg.norm(inner[2] - inner[6]), 1.0)
    cav = np.stack([(half + 4) * np.sin(th) * np.cos(ph),
                    np.broadcast_to((gap / 2 + 8) * np.cos(th), (rows, cols)),
                    18.0 * np.sin(th) * np.sin(ph)], -1).reshape(-1, 3)
    cav += centre + np.array([0.0, 0.0, -21.0])  # its front stays 3 mm behind the lip line
    cav_tri = _grid_mesh(cav, rows, cols, closed=True)
    out = []
    pos = _eye_frame(cav, cam)
    nrm = vertex_normals(pos, cav_tri)
    tex = _solid_texture(np.array([0.30, 0.08, 0.08]) * rng.uniform(0.6, 1.2), 0.4, 0.1, rng)
    out.append(Mesh(pos, -nrm, cav_tri, np.full((len(cav), 2), 0.5), tex,
                    ao=np.full(len(cav), 0.4), spec=0.4, shininess=30, casts_shadow=False))
    teeth_tex = np.zeros((8, 32, 4), np.float32)
    teeth_tex[..., :3] = np.array([0.88, 0.84, 0.74]) * rng.uniform(0.7, 1.0)
    teeth_tex[:, ::4, :3] *= 0.6  # gaps between teeth
    teeth_tex[..., 3] = 0.7
    teeth_tex = np.clip(teeth_tex * 255, 0, 255).astype(np.uint8)
    n = 9
    x = np.linspace(-1, 1, n) * 0.85
    for upper in (True, False):
        anchor = inner[[1, 2, 3]] if upper else inner[[5, 6, 7]]
        y_lip = anchor[:, 1].mean()
        z_lip = anchor[:, 2].max()
        length = rng.uniform(6, 10)
        sign = -1.0 if upper else 1.0
        arch_z = z_lip - 3.0 - 8.0 * x ** 2
        edge = np.stack([centre[0] + x * half, np.full(n, y_lip + sign * length * 0.5), arch_z], 1)
        root = edge + np.array([0.0, -sign * length, -1.0])
        pts = np.vstack([root, edge])
        tri = _grid_mesh(pts, 2, n)
        pos = _eye_frame(pts, cam)
        nrm = np.tile(cam.matrix @ np.array([0.0, 0.0, 1.0]), (len(pts), 1))
        uv = np.stack([np.tile(np.linspace(0, 1, n), 2), np.repeat([0.0, 1.0], n)], 1)
        out.append(Mesh(pos, nrm, tri, uv, teeth_tex, ao=np.full(len(pts), 0.7), spec=0.5,
                        shininess=40, casts_shadow=False))
    return out


@functools.lru_cache(maxsize=4)
def _ear_template(rows: int = 8, cols: int = 18):
    """Ear in its own frame: x out of the head, y up, z forward (mm), plus grid triangles."""
    r = np.linspace(0.0, 1.0, rows)[:, None]
    a = np.linspace(0, 2 * np.pi, cols, endpoint=False)[None, :]
    y = 30.0 * r * np.sin(a)
    z = 16.0 * r * np.cos(a) - 4.0 * r
    rim = np.exp(-0.5 * ((r - 0.88) / 0.08) ** 2)
    x = 3.0 + 12.0 * r ** 1.5 + 3.0 * rim - 5.0 * np.exp(-0.5 * (r / 0.35) ** 2) * (np.cos(a) > -0.3)
    pts = np.stack([np.broadcast_to(x, y.shape), y, z], axis=-1).reshape(-1, 3)
    return pts, _grid_mesh(pts, rows, cols, closed=True)


def ear_meshes(verts: np.ndarray, cam: Camera, look: Look, rng: np.random.Generator) -> list:
    pts, tri = _ear_template()
    out = []
    x_side = np.max(np.abs(verts[:, 0]))
    for side in (-1.0, 1.0):
        p = pts.copy()
        p[:, 0] = side * (x_side - 6.0 + p[:, 0])
        p[:, 1] += -12.0
        p[:, 2] += -10.0
        t = tri if side > 0 else tri[:, [0, 2, 1]]
        pos = _eye_frame(p, cam)
        nrm = vertex_normals(pos, t)
        ao = np.clip(0.55 + 0.45 * np.repeat(np.linspace(0, 1, 8), 18), 0.4, 1.0)
        tex = _solid_texture(look.skin * np.array([1.0, 0.93, 0.92]), 0.3, 0.03, rng)
        out.append(Mesh(pos, nrm, t, np.full((len(p), 2), 0.5), tex, ao=ao, spec=look.shine * 0.5))
    return out


def body_mesh(cam: Camera, look: Look, rng: np.random.Generator) -> Mesh:
    """Neck (skin) and shoulders (clothes) as one lofted surface."""
    cols = 24
    a = np.linspace(0, 2 * np.pi, cols, endpoint=False)
    rings = [(-30.0, 54, 50, 0.0), (-125.0, 56, 52, 0.2), (-150.0, 75, 58, 0.45),
             (-175.0, 150, 78, 0.55), (-215.0, 190, 92, 0.75), (-480.0, 205, 98, 1.0)]
    pts, vs = [], []
    for y, rx, rz, v in rings:
        pts.append(np.stack([rx * np.sin(a), np.full(cols, y), -25 + rz * np.cos(a)], axis=1))
        vs.append(np.full(cols, v))
    pts = np.vstack(pts)
    tri = _grid_mesh(pts, len(rings), cols, closed=True)[:, [0, 2, 1]]
    uv = np.stack([np.tile(np.linspace(0.05, 0.95, cols), len(rings)), np.concatenate(vs)], axis=1)
    tex = np.empty((64, 64, 4), np.float32)
    tex[..., :3] = look.skin * 0.95
    tex[..., 3] = look.shine * 0.8
    cloth = np.empty((40, 64, 3), np.float32)
    cloth[:] = look.cloth
    if look.cloth_pattern == 1:
        other = rng.uniform(0.05, 0.9, 3)
        stripes = (np.arange(64) // int(rng.integers(2, 8))) % 2 == 0
        cloth[:, stripes] = other
    elif look.cloth_pattern == 2:
        cloth *= 1.0 + 0.25 * rng.standard_normal((40, 64, 1))
    elif look.cloth_pattern == 3:
        other = rng.uniform(0.05, 0.9, 3)
        k = int(rng.integers(3, 9))
        chk = ((np.arange(40)[:, None] // k + np.arange(64)[None] // k) % 2) == 0
        cloth[chk] = other
    tex[24:, :, :3] = cloth
    tex[24:, :, 3] = 0.1
    tex = np.clip(tex * 255, 0, 255).astype(np.uint8)
    pos = _eye_frame(pts, _body_camera(cam))
    nrm = vertex_normals(pos, tri)
    ao = np.clip(np.concatenate([np.full(cols, 0.55), np.full(cols * (len(rings) - 1), 1.0)]), 0, 1)
    return Mesh(pos, nrm, tri, uv, tex, ao=ao, spec=0.3)


def long_hair_mesh(cam: Camera, look: Look, rng: np.random.Generator) -> Mesh:
    """A curtain of hair behind and beside the head, down to the chin or the shoulders."""
    rows, cols = 14, 28
    bottom = -70.0 if look.hairstyle == "medium" else -200.0
    ys = np.linspace(95.0, bottom, rows)
    th = np.deg2rad(np.linspace(70, 290, cols))
    grow = np.clip((60.0 - ys) / 200.0, 0, 1)[:, None]
    rx = 80.0 + look.hair_volume + 25.0 * grow
    rz = 98.0 + look.hair_volume + 10.0 * grow
    top = np.clip((ys - 20.0) / 80.0, 0, 1)[:, None]
    rx = rx * np.sqrt(1 - 0.6 * top ** 2)
    x = rx * np.sin(th)[None]
    z = -5.0 + rz * np.cos(th)[None]
    y = np.broadcast_to(ys[:, None], x.shape)
    pts = np.stack([x, y, z], axis=-1).reshape(-1, 3)
    tri = _grid_mesh(pts, rows, cols)
    uv = np.stack(np.meshgrid(np.linspace(0, 1, cols), np.linspace(0, 1, rows)), -1).reshape(-1, 2)
    tex = np.empty((64, 128, 4), np.float32)
    strands = rng.standard_normal((1, 128)).astype(np.float32)
    strands = cv2.GaussianBlur(strands, (0, 0), 0.8)
    tex[..., :3] = look.hair * np.clip(0.85 + 0.35 * strands, 0.3, 1.6)[..., None]
    tex[..., 3] = 0.6
    tex = np.clip(tex * 255, 0, 255).astype(np.uint8)
    pos = _eye_frame(pts, cam)
    return Mesh(pos, vertex_normals(pos, tri), tri, uv, tex, spec=look.shine + 0.2, shininess=30)


def hat_mesh(head: TemplateHead, verts: np.ndarray, cam: Camera, look: Look,
             rng: np.random.Generator) -> Mesh:
    """A cap: the skull above a rim line, pushed outward, with a brim half the time."""
    u, y = head.param[:, 0] * U_SCALE, head.param[:, 1]
    rim = float(rng.uniform(38, 55))
    sel = y > rim - 6.0 * np.cos(u / U_MAX * np.pi)
    keep = np.all(sel[head.triangles], axis=1)
    tri_all = head.triangles[keep]
    used = np.unique(tri_all)
    remap = -np.ones(len(verts), np.int64)
    remap[used] = np.arange(len(used))
    pos = _eye_frame(verts[used], cam)
    nrm = vertex_normals(_eye_frame(verts, cam), head.triangles)[used]
    pos = pos + nrm * (look.hair_volume + 6.0)
    tri = remap[tri_all]
    tex = _solid_texture(look.hat_colour, 0.15, 0.05, rng)
    mesh_pos, mesh_tri = [pos], [tri]
    if rng.random() < 0.5:  # baseball-cap brim in front
        a = np.deg2rad(np.linspace(-60, 60, 9))
        inner = np.stack([85 * np.sin(a), np.full(9, rim + 2), 20 + 75 * np.cos(a)], axis=1)
        outer = np.stack([95 * np.sin(a), np.full(9, rim - 5), 40 + 110 * np.cos(a)], axis=1)
        bp = _eye_frame(np.vstack([inner, outer]), cam)
        mesh_tri.append(_grid_mesh(bp, 2, 9) + len(pos))
        mesh_pos.append(bp)
    pos = np.vstack(mesh_pos)
    tri = np.vstack(mesh_tri)
    return Mesh(pos, vertex_normals(pos, tri), tri, np.full((len(pos), 2), 0.5), tex, spec=0.15)


def glasses_meshes(verts: np.ndarray, cam: Camera, look: Look, rng: np.random.Generator) -> list:
    """Rims (and dark lenses for sunglasses) in front of the eyes, with the bridge and arms."""
    w = rng.uniform(44, 56)  # lens width and height (mm)
    h = rng.uniform(28, 42)
    thick = rng.uniform(1.2, 3.5)
    rim_pts, rim_tri, lens_pts, lens_tri = [], [], [], []
    a = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    for eye in (slice(36, 42), slice(42, 48)):
        c = verts[eye].mean(axis=0) + np.array([0.0, -2.0, 16.0])
        ring_in = np.stack([c[0] + w * 0.5 * np.cos(a), c[1] + h * 0.5 * np.sin(a), np.full(24, c[2])], 1)
        ring_out = np.stack([c[0] + (w * 0.5 + thick) * np.cos(a), c[1] + (h * 0.5 + thick) * np.sin(a),
                             np.full(24, c[2])], 1)
        base = sum(len(p) for p in rim_pts)
        rim_pts.append(np.vstack([ring_in, ring_out]))
        rim_tri.append(_grid_mesh(np.vstack([ring_in, ring_out]), 2, 24, closed=True) + base)
        if look.glasses == "sun":
            lb = sum(len(p) for p in lens_pts)
            lens_pts.append(np.vstack([c[None], ring_in]))
            lens_tri.append(np.array([[0, 1 + k, 1 + (k + 1) % 24] for k in range(24)]) + lb)
    # Bridge and arms as thin quads.
    cl, cr = verts[36:42].mean(axis=0), verts[42:48].mean(axis=0)
    zf = max(cl[2], cr[2]) + 16.0
    quads = [((cl[0] + w * 0.5, cl[1] + 4, zf), (cr[0] - w * 0.5, cr[1] + 4, zf))]
    x_side = np.max(np.abs(verts[:, 0]))
    for s, c in ((-1, cl), (1, cr)):
        quads.append(((c[0] + s * (w * 0.5 + thick), c[1] + 3, zf), (s * (x_side + 2), c[1] + 3, -20.0)))
    base = sum(len(p) for p in rim_pts)
    for p0, p1 in quads:
        p0, p1 = np.array(p0), np.array(p1)
        q = np.array([p0, p1, p1 + [0, thick, 0], p0 + [0, thick, 0]])
        rim_pts.append(q)
        rim_tri.append(np.array([[0, 1, 2], [0, 2, 3]]) + base)
        base += 4
    pos = _eye_frame(np.vstack(rim_pts), cam)
    tri = np.vstack(rim_tri)
    out = [Mesh(pos, vertex_normals(pos, tri), tri, np.full((len(pos), 2), 0.5),
                _solid_texture(look.glasses_colour, 0.8), spec=0.6, shininess=60, casts_shadow=True)]
    if lens_pts:
        lp = _eye_frame(np.vstack(lens_pts), cam)
        lt = np.vstack(lens_tri)
        nrm = np.tile([[0.0, 0.0, 1.0]], (len(lp), 1)) @ rotation(cam.pitch, cam.yaw, cam.roll).T
        out.append(Mesh(lp, nrm, lt, np.full((len(lp), 2), 0.5),
                        _solid_texture(look.glasses_colour * 0.15, 1.0), spec=1.0, shininess=80))
    return out


def sample_lighting(rng: np.random.Generator) -> Lighting:
    """One to three directional lights (warm, cool or coloured), hemisphere ambient."""
    n = int(rng.choice([1, 2, 3], p=[0.35, 0.45, 0.2]))
    dirs, cols = [], []
    for k in range(n):
        if k == 0:
            d = np.array([rng.normal(0, 0.6), rng.normal(0.35, 0.4), rng.uniform(0.3, 1.2)])
        elif rng.random() < 0.4:  # rim light from behind
            d = np.array([rng.choice([-1, 1]) * rng.uniform(0.5, 1), rng.uniform(-0.2, 0.6), rng.uniform(-1, -0.2)])
        else:
            d = np.array([rng.normal(0, 1), rng.normal(0, 0.5), rng.uniform(0, 1)])
        dirs.append(d / np.linalg.norm(d))
        temp = rng.uniform(-1, 1)
        c = np.array([1.0 + 0.15 * temp, 1.0, 1.0 - 0.2 * temp])
        if rng.random() < 0.1:
            c = rng.uniform(0.2, 1.0, 3)
        cols.append(c * (rng.uniform(0.6, 1.2) if k == 0 else rng.uniform(0.1, 0.6)))
    sky = rng.uniform(0.04, 0.35) * rng.uniform(0.8, 1.2, 3)
    ground = sky * rng.uniform(0.3, 0.8) * rng.uniform(0.8, 1.2, 3)
    return Lighting(np.array(dirs), np.array(cols), sky=sky, ground=ground,
                    wrap=float(rng.uniform(0.1, 0.4)), shadow_soft=float(rng.uniform(0.5, 4.0)),
                    shadows=bool(rng.random() < 0.85))
