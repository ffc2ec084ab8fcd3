#!/usr/bin/env python3
"""Generate the small synthetic sample data sets under data/ (stdlib only, deterministic).

    python scripts/make_sample_data.py            # writes data/advertise_gen/*.jsonl, data/multiturn/*.jsonl
    python scripts/make_sample_data.py --out DIR  # somewhere else

AdvertiseGen-style records (clothing attribute tags -> Chinese ad text) are assembled from phrase banks:
an opening naming the garment, one sentence per tagged attribute, optional filler sentences and a closing.
Multi-turn shopping-assistant dialogues are built from the same tag sampler plus per-material facts.
Everything is drawn from seeded `random.Random` streams, so re-running reproduces the files byte-for-byte.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

MIN_LEN, MAX_LEN = 60, 200


# --------------------------------------------------------------------------------------------- tags
def sample_tags(rng: random.Random, kind: str | None = None, force: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """Draw a consistent AdvertiseGen tag list: [("类型", "裙"), ("颜色", "黑色"), ...] in canonical key order."""
    kind = kind or rng.choice(["裙", "裤", "上衣"])
    values = {**COMMON_VALUES, **TYPE_VALUES[kind]}
    materials = list(TYPE_MATERIALS[kind])
    top_style = None
    if kind == "上衣":  # the (possibly untagged) top style constrains material, collar and sleeves
        top_style = rng.choice(sorted(TOP_STYLES))
        spec = TOP_STYLES[top_style]
        materials, values["衣领型"], values["衣袖长"], values["衣袖型"] = spec
    values["材质"] = materials
    optional = [k for k in values if k not in force]
    keys = set(force) | set(rng.sample(optional, rng.randint(max(0, 2 - len(force)), 6 - len(force) // 2)))
    if kind == "上衣" and rng.random() < 0.7:
        keys.add("衣样式")
        values["衣样式"] = [top_style]
    if kind == "裙" and "裙长" in keys and keys & SKIRT_DRESS_KEYS:
        values["裙长"] = [v for v in values["裙长"] if v != "半身裙"]  # sleeves / collar mean a dress
    tags = [("类型", kind)]
    for key in KEY_ORDER:
        if key not in keys or not values.get(key):
            continue
        pool = list(values[key])
        if key == "裤款式" and "材质" in keys and dict(tags).get("材质") != "牛仔布":
            pool = [v for v in pool if v not in ("破洞", "毛边")]  # distressing only on denim
        chosen = [rng.choice(pool)]
        if key in PAIRS and rng.random() < 0.15:  # AdvertiseGen repeats a key now and then
            chosen = list(rng.choice(PAIRS[key]))
        tags += [(key, v) for v in chosen]
    vals = {v for _, v in tags}
    denim_clash = "牛仔裙" in vals and dict(tags).get("材质", "牛仔布") != "牛仔布"
    if len(tags) < 3 or denim_clash or any(a in vals and b in vals for a, b in CLASHES):
        return sample_tags(rng, kind, force)  # e.g. wool shorts: draw again
    return tags


def item_noun(tags: list[tuple[str, str]]) -> str:
    d = dict(tags)
    if d["类型"] == "裙":
        return d.get("裙型") or d.get("裙长") or ("连衣裙" if SKIRT_DRESS_KEYS & set(d) else "裙子")
    if d["类型"] == "裤":
        return d.get("裤型") or d.get("裤长") or "裤子"
    return d.get("衣样式") or "上衣"


# --------------------------------------------------------------------------------------------- ad text
def compose_ad(rng: random.Random, tags: list[tuple[str, str]]) -> str:
    """One candidate ad text for `tags` (length not yet controlled)."""
    kind = tags[0][1]
    fmt = {"n": BODY[kind], "m": MEASURE[kind]}
    counts: dict[str, int] = {}
    for k, _ in tags:
        counts[k] = counts.get(k, 0) + 1
    consumed, prefix = set(), ""
    for key, suffix in (("风格", "风"), ("颜色", "")):  # sometimes fold a single colour / style into the name
        value = dict(tags).get(key)
        if value and counts[key] == 1 and rng.random() < 0.35:
            prefix += value + suffix
            consumed.add(key)
    item = prefix + item_noun(tags)
    consumed.add("衣样式")  # the top style is always the garment's name
    sentences = [rng.choice(OPENINGS).format(item=item, **fmt)]
    body, used_tpl = [], set()
    for key, value in tags[1:]:
        if key in consumed:
            continue
        templates, benefits = PHRASES[key]
        benefit = rng.choice(benefits[value])
        if "{v}" in benefit:  # a complete clause of its own
            clause = benefit.format(v=value, **fmt)
        else:
            tpl = rng.choice([t for t in templates if (key, t) not in used_tpl] or templates)
            used_tpl.add((key, tpl))
            clause = tpl.format(v=value, b=benefit, **fmt)
        body.append(clause + "。")
    for i in range(len(body) - 1):  # light shuffling so the order isn't always the tag order
        if rng.random() < 0.25:
            body[i], body[i + 1] = body[i + 1], body[i]
    connectors = rng.sample(CONNECTORS, len(CONNECTORS))
    for i in range(1, len(body)):
        if connectors and rng.random() < 0.3 and not body[i - 1].startswith(tuple(CONNECTORS)):
            body[i] = connectors.pop() + body[i]
    sentences += body
    sentences += rng.sample(FILLERS, rng.choice([0, 0, 1, 1, 2, 3]))
    if rng.random() < 0.8:
        sentences.append(rng.choice(CLOSINGS["*"] + CLOSINGS[kind]).format(**fmt))
    return "".join(sentences)


def mentions_all(text: str, tags: list[tuple[str, str]]) -> bool:
    kind = tags[0][1]
    kind_ok = kind in text if kind != "上衣" else ("上衣" in text or dict(tags).get("衣样式", "上衣") in text)
    return kind_ok and all(v in text for _, v in tags[1:])


def make_ad(rng: random.Random, tags: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], str]:
    """Pick, among several candidates, the one closest to a random target length in [MIN_LEN, MAX_LEN]."""
    target = rng.randint(MIN_LEN + 5, MAX_LEN - 5)
    while True:
        ok = []
        for _ in range(60):
            text = compose_ad(rng, tags)
            fits = MIN_LEN <= len(text) <= MAX_LEN and "{" not in text
            if fits and mentions_all(text, tags) and not repeats(text):
                ok.append(text)
        if ok:
            return tags, min(ok, key=lambda t: abs(len(t) - target))
        tags = tags[:-1]  # too many tags to fit in MAX_LEN characters: drop the last one and retry


def repeats(text: str) -> bool:
    """True if a sentence or comma clause occurs twice (e.g. two benefits that both say 经典耐看)."""
    clauses = [c for c in text.replace("。", "，").split("，") if c]
    return len(set(clauses)) != len(clauses)


def make_alpaca(rng: random.Random, n: int, seen: set[str]) -> list[dict]:
    records = []
    while len(records) < n:
        tags, text = make_ad(rng, sample_tags(rng))
        instruction = "*".join(f"{k}#{v}" for k, v in tags)
        if instruction in seen or text in seen:
            continue
        seen |= {instruction, text}
        records.append({"instruction": instruction, "input": "", "output": text})
    return records


# --------------------------------------------------------------------------------------------- dialogues
def size_for(weight_jin: int) -> str:
    for limit, size in ((90, "S"), (105, "M"), (120, "L"), (135, "XL")):
        if weight_jin <= limit:
            return size
    return "XXL"


def answer_zh(rng: random.Random, topic: str, d: dict, name: str, q: dict) -> str:
    kind, facts = d["类型"], MATERIAL_FACTS[d["材质"]]
    if topic == "size":
        size = size_for(q["w"])
        fit = {"宽松": "这款是宽松版型，喜欢合身一点的话可以选小一码", "修身": "这款是修身版型，如果介于两个码之间，建议选大一码",
               }.get(d.get("版型"), "这款是标准版型，按平时的尺码选就可以")
        extra = {"裤": "裤长可以参考详情页的尺码表，腰围是关键，先量一下自己的腰围再对照会更准。",
                 "裙": "裙长会因身高略有不同，可以对照详情页里的模特身高和上身效果。",
                 "上衣": "肩宽和胸围可以对照详情页的尺码表再确认一下。"}[kind]
        return f"根据您身高{q['h']}cm、体重{q['w']}斤的情况，建议选{size}码。{fit}。{extra}"
    if topic == "material":
        return f"这款{name}的面料是{d['材质']}，{facts['feel']}。{facts['note']}"
    if topic == "wash":
        return f"{d['材质']}面料的{name}，{facts['care']}"
    if topic == "season":
        return f"{facts['season']}。" + ("长袖的款式早晚温差大的时候也很实用。" if "长袖" in d.values() else "")
    if topic == "match":
        options = {"裙": ["简单的白色T恤", "短款针织开衫", "合身的小西装", "宽松的衬衫"],
                   "裤": ["基础款白衬衫", "短款针织衫", "纯色T恤", "小香风外套"],
                   "上衣": ["高腰直筒牛仔裤", "A字半身裙", "垂感阔腿裤", "百褶裙"]}[kind]
        shoes = ["小白鞋", "乐福鞋", "尖头单鞋", "短靴", "帆布鞋"]
        a, b = rng.sample(options, 2)
        neutral = d.get("颜色") in ("黑色", "白色", "灰色", "米白色", "杏色", "卡其色", "藏青色", "深蓝色")
        color = (f"{d['颜色']}是很百搭的颜色，" if neutral else f"{d['颜色']}比较亮眼，建议其他单品选黑白灰等中性色，") if d.get("颜色") else ""
        tail = rng.choice(["想正式一些的话，换成尖头鞋再加一只简约的包包就可以。", "天冷时外面再加一件风衣，层次感会更好。",
                           "配饰尽量简单，整体会显得更干净利落。"])
        return f"{color}可以搭配{a}或者{b}，脚上配一双{rng.choice(shoes)}，日常出门就很好看。{tail}"
    style = d.get("风格")
    if style is None:
        return "可以的，这款设计简洁大方，搭配一件西装外套或者纯色衬衫，通勤穿也很得体。"
    if style in ("通勤", "优雅", "简约", "英伦", "文艺"):
        return f"适合的，这款是{style}风格，款式大方得体，上班穿完全没问题。搭配一件简约的外套，会更显干练。"
    return f"这款偏{style}风格，更适合日常逛街、约会或出游。如果公司着装要求比较严格，建议搭配一件纯色外套，会显得更稳重。"


def make_dialogue_zh(rng: random.Random) -> list[dict]:
    tags = sample_tags(rng, force=("材质", "颜色"))
    d = dict(tags)
    name = d["颜色"] + item_noun(tags)
    topics = ["size", "material", "wash", "match", "season", "occasion"]
    chosen = rng.sample(topics, rng.randint(2, 4))
    msgs = [{"role": "system", "content": rng.choice(SYSTEM_PROMPTS)}] if rng.random() < 0.6 else []
    for i, topic in enumerate(chosen):
        q = {"h": rng.randrange(150, 176), "w": rng.randrange(85, 141)}
        question = rng.choice(QUESTIONS[topic]).format(name=name, **q)
        if i == 0:
            question = rng.choice(["你好，", "在吗？", "您好，", ""]) + f"我在看这款{name}，" + question
        elif rng.random() < 0.5:
            question = rng.choice(["好的，", "明白了，", "谢谢，", "嗯嗯，"]) + question
        answer = answer_zh(rng, topic, d, name, q)
        if i == 0:
            answer = rng.choice(["您好！", "您好，", "亲，您好！"]) + answer
        if i == len(chosen) - 1 and rng.random() < 0.5:
            answer += rng.choice(["如果还有其他问题，随时问我哦。", "祝您购物愉快！", "有需要可以随时再来咨询。"])
        msgs += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return msgs


def make_dialogue_en(rng: random.Random) -> list[dict]:
    product = rng.choice(EN_PRODUCTS)
    topics = rng.sample(sorted(EN_QA), rng.randint(2, 4))
    msgs = [{"role": "system", "content": rng.choice(SYSTEM_PROMPTS_EN)}] if rng.random() < 0.6 else []
    for i, topic in enumerate(topics):
        h, w = rng.randrange(152, 185), rng.randrange(45, 80)
        question, answer = EN_QA[topic]
        question = question.format(h=h, w=w, **product)
        answer = answer.format(size=size_for(w * 2), **product)
        if i == 0:
            question = rng.choice(["Hi, I'm looking at the {}. ", "Hello! Quick question about the {}. ",
                                   "Hey, I'm interested in the {}. "]).format(product["name"]) + question
        elif rng.random() < 0.5:
            question = rng.choice(["Thanks! ", "Got it. ", "OK, one more thing. "]) + question
        msgs += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return msgs


def make_dialogues(rng: random.Random, n: int, n_en: int, seen: set[str]) -> list[list[dict]]:
    english = set(rng.sample(range(n), n_en))
    out = []
    while len(out) < n:
        msgs = make_dialogue_en(rng) if len(out) in english else make_dialogue_zh(rng)
        key = json.dumps(msgs, ensure_ascii=False)
        if key not in seen:
            seen.add(key)
            out.append(msgs)
    return out


def to_sharegpt(msgs: list[dict]) -> dict:
    role = {"system": "system", "user": "human", "assistant": "gpt"}
    return {"conversations": [{"from": role[m["role"]], "value": m["content"]} for m in msgs]}


# --------------------------------------------------------------------------------------------- output
def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"wrote {len(records):4d} records to {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "data")
    parser.add_argument("--seed", type=int, default=20240229)
    args = parser.parse_args(argv)
    seen: set[str] = set()  # train and dev share no instruction and no output
    write_jsonl(args.out / "advertise_gen" / "train.jsonl", make_alpaca(random.Random(args.seed), 220, seen))
    write_jsonl(args.out / "advertise_gen" / "dev.jsonl", make_alpaca(random.Random(args.seed + 1), 30, seen))
    seen.clear()
    dialogues = make_dialogues(random.Random(args.seed + 2), 24, 4, seen)
    write_jsonl(args.out / "multiturn" / "train.jsonl", [{"messages": m} for m in dialogues])
    dialogues = make_dialogues(random.Random(args.seed + 3), 8, 2, seen)
    write_jsonl(args.out / "multiturn" / "sharegpt.jsonl", [to_sharegpt(m) for m in dialogues])


# --------------------------------------------------------------------------------------------- phrase banks
# Key order follows AdvertiseGen: 类型, then common keys, then the garment-specific ones.
KEY_ORDER = ["版型", "材质", "颜色", "风格", "图案", "裙型", "裙长", "裙袖长", "裙领型", "裙款式",
             "裤长", "裤型", "裤腰型", "裤款式", "衣样式", "衣领型", "衣袖长", "衣袖型", "衣款式"]
COMMON_VALUES = {
    "版型": ["宽松", "显瘦", "修身"],
    "颜色": ["黑色", "白色", "红色", "藏青色", "卡其色", "粉色", "灰色", "米白色", "蓝色", "绿色", "酒红色", "杏色",
           "深蓝色", "黄色", "紫色"],
    "风格": ["简约", "休闲", "复古", "文艺", "通勤", "甜美", "性感", "街头", "清新", "优雅", "学院", "英伦"],
    "图案": ["纯色", "条纹", "格子", "碎花", "印花", "刺绣", "撞色", "波点", "线条", "字母", "几何"],
}
TYPE_VALUES = {
    "裙": {"裙型": ["A字裙", "直筒裙", "包臀裙", "百褶裙", "鱼尾裙", "蛋糕裙", "一步裙", "牛仔裙"],
          "裙长": ["短裙", "中长裙", "长裙", "半身裙", "连衣裙"],
          "裙袖长": ["短袖", "长袖", "无袖", "七分袖", "五分袖"],
          "裙领型": ["V领", "圆领", "方领", "一字领", "翻领", "立领", "娃娃领"],
          "裙款式": ["拼接", "系带", "腰带", "荷叶边", "木耳边", "开叉", "纽扣", "褶皱", "不规则"]},
    "裤": {"裤长": ["短裤", "九分裤", "七分裤", "长裤", "五分裤"],
          "裤型": ["阔腿裤", "直筒裤", "哈伦裤", "铅笔裤", "微喇裤", "工装裤", "灯笼裤"],
          "裤腰型": ["高腰", "松紧腰", "中腰"],
          "裤款式": ["口袋", "破洞", "毛边", "系带", "拼接", "卷边", "纽扣"]},
    "上衣": {"衣领型": [], "衣袖长": [], "衣袖型": [],
            "衣款式": ["口袋", "纽扣", "拼接", "系带", "荷叶边", "不规则", "木耳边"]},
}
SKIRT_DRESS_KEYS = {"裙袖长", "裙领型"}
TYPE_MATERIALS = {"裙": ["棉", "雪纺", "真丝", "牛仔布", "针织", "亚麻", "蕾丝", "网纱", "聚酯纤维", "灯芯绒"],
                  "裤": ["棉", "牛仔布", "亚麻", "羊毛", "雪纺", "针织", "灯芯绒", "聚酯纤维"], "上衣": []}
TOP_STYLES = {  # style: (materials, collars, sleeve lengths, sleeve types)
    "衬衫": (["棉", "纯棉", "真丝", "雪纺", "亚麻"], ["翻领", "尖领", "立领", "V领"], ["长袖", "短袖", "七分袖"],
           ["泡泡袖", "灯笼袖", "喇叭袖"]),
    "T恤": (["棉", "纯棉", "聚酯纤维"], ["圆领", "V领"], ["短袖", "长袖", "五分袖"], ["落肩袖", "泡泡袖", "蝙蝠袖"]),
    "卫衣": (["棉", "纯棉", "聚酯纤维"], ["圆领", "连帽"], ["长袖"], ["落肩袖", "插肩袖"]),
    "毛衣": (["羊毛", "针织"], ["圆领", "高领", "V领"], ["长袖", "七分袖"], ["落肩袖", "灯笼袖", "蝙蝠袖"]),
    "针织衫": (["针织", "羊毛", "棉"], ["圆领", "V领", "高领"], ["长袖", "短袖", "七分袖"], ["泡泡袖", "落肩袖"]),
    "雪纺衫": (["雪纺"], ["圆领", "V领", "立领"], ["短袖", "七分袖", "无袖", "五分袖"], ["荷叶袖", "喇叭袖", "泡泡袖"]),
    "外套": (["牛仔布", "羊毛", "聚酯纤维", "灯芯绒"], ["翻领", "立领", "连帽"], ["长袖"], ["落肩袖", "插肩袖"]),
    "西装": (["聚酯纤维", "羊毛", "亚麻"], ["西装领"], ["长袖", "七分袖"], []),
    "风衣": (["棉", "聚酯纤维"], ["翻领", "西装领"], ["长袖"], ["插肩袖", "落肩袖"]),
}
CLASHES = [(a, b) for a in ("羊毛", "灯芯绒") for b in ("短裤", "五分裤", "短袖", "五分袖", "无袖")] + [
    ("牛仔布", "网纱"), ("网纱", "一步裙"), ("修身", "阔腿裤"), ("修身", "灯笼裤"), ("修身", "哈伦裤"),
    ("宽松", "铅笔裤"), ("宽松", "包臀裙"), ("宽松", "一步裙"), ("宽松", "鱼尾裙"),
    ("铅笔裤", "短裤"), ("铅笔裤", "五分裤"), ("微喇裤", "短裤"), ("微喇裤", "五分裤"), ("卷边", "短裤"),
    ("雪纺", "工装裤"), ("修身", "蝙蝠袖"), ("修身", "落肩袖")]
PAIRS = {"版型": [("宽松", "显瘦"), ("修身", "显瘦")],
         "风格": [("复古", "文艺"), ("简约", "通勤"), ("甜美", "清新"), ("休闲", "街头"), ("优雅", "通勤"),
                ("性感", "复古"), ("英伦", "学院"), ("简约", "休闲"), ("文艺", "清新")]}
BODY = {"裙": "裙身", "裤": "裤身", "上衣": "衣身"}
MEASURE = {"裙": "条", "裤": "条", "上衣": "件"}

SLEEVE_LEN = {"短袖": ["清爽利落，夏天穿着不闷热", "露出纤细的手臂，更显轻盈"],
              "长袖": ["能很好地修饰手臂线条", "春秋单穿或叠穿都很合适"],
              "七分袖": ["露出纤细的手腕，干练又精致", "不长不短刚刚好，尽显优雅"],
              "五分袖": ["刚好遮住手臂上的拜拜肉", "兼顾了凉爽和修饰效果"],
              "无袖": ["清凉透气，展现优美的肩臂线条", "利落干脆，夏日感满满"]}
COLLAR = {"V领": ["能拉长脖颈线条，显得脸更小", "微露锁骨，性感又不失分寸"],
          "圆领": ["简洁大方，适合各种脸型", "干净利落，百搭又经典"],
          "翻领": ["利落挺括，透着干练的气质", "带来几分清爽的书卷气"],
          "立领": ["衬托出修长的脖颈，显得精神又有气质", "带着几分含蓄的东方韵味"],
          "方领": ["展露精致的锁骨，复古又优雅", "很好地修饰脸型和肩颈"],
          "一字领": ["大方露出肩部线条，尽显女人味", "优雅又浪漫，很有度假感"],
          "娃娃领": ["减龄又甜美，透着少女气息", "乖巧可爱，满满的元气感"],
          "连帽": ["休闲感十足，还能挡风保暖", "增添了几分运动活力"],
          "高领": ["保暖又显脖子修长", "优雅知性，很有氛围感"],
          "尖领": ["修饰脸型，显得干练利落", "挺括有型，精气神十足"],
          "西装领": ["挺括有型，气场十足", "利落干练，上班穿也很得体"]}
DETAIL = {"拼接": ["层次分明，打破了单调感", "丰富了整体的视觉效果"],
          "系带": ["可以随意调节松紧，俏皮又灵动", "轻松勾勒出纤细的腰身"],
          "腰带": ["收腰效果明显，提升腰线显高", "点缀得恰到好处，更显精致"],
          "荷叶边": ["灵动飘逸，增添了几分甜美", "层层叠叠，浪漫又减龄"],
          "木耳边": ["精致俏皮，透着少女感", "柔美灵动，温柔又可爱"],
          "开叉": ["行走间若隐若现，性感又方便活动", "拉长了腿部线条，不失女人味"],
          "纽扣": ["精致又有质感，提升了细节感", "复古又实用，小细节里见用心"],
          "褶皱": ["立体有型，增加了层次感", "随性自然，更显灵动"],
          "口袋": ["实用又方便收纳小物", "随手插兜也很有型"],
          "破洞": ["随性不羁，街头感十足", "个性又时髦，很有态度"],
          "毛边": ["带来几分随性的复古味", "做旧感十足，个性满满"],
          "卷边": ["利落有型，透着几分随性", "随性慵懒，轻松打造时髦感"],
          "不规则": ["打破常规，极具设计感", "灵动有趣，彰显个性"]}
DETAIL_TPL = ["{v}的设计，{b}", "{n}加入了{v}细节，{b}", "别致的{v}设计，{b}"]
PHRASES = {  # key: (templates using {v} value / {b} benefit / {n} body word, {value: [benefits]})
    "版型": (["{v}的版型，{b}", "整体是{v}的剪裁，{b}", "版型上主打{v}，{b}"],
           {"宽松": ["不挑身材，穿起来毫无束缚感", "随性自在，轻松遮住小肚腩"],
            "显瘦": ["很好地修饰身材线条，视觉上瘦了一圈", "藏肉效果一流，微胖的女生也能放心穿"],
            "修身": ["贴合身形，勾勒出曼妙的曲线", "利落合体，穿出满满的精气神"]}),
    "材质": (["选用{v}面料，{b}", "{v}材质，{b}", "面料采用{v}，{b}", "{v}的质地，{b}"],
           {"棉": ["柔软亲肤，透气吸汗", "手感舒适，贴身穿也不会闷热"],
            "纯棉": ["亲肤透气，穿着格外舒适", "吸湿排汗，日常穿着很安心"],
            "雪纺": ["轻盈飘逸，夏天穿着清爽不闷", "垂感出色，走起路来灵动有致"],
            "真丝": ["光泽柔和，触感丝滑细腻", "轻薄透气，尽显高级质感"],
            "牛仔布": ["耐穿有型，越穿越有味道", "挺括厚实，自带随性气质"],
            "针织": ["柔软有弹性，穿着毫无束缚", "手感细腻，温柔又舒适"],
            "亚麻": ["透气凉爽，带着自然的肌理感", "质朴清爽，文艺气息浓郁"],
            "羊毛": ["保暖性好，触感柔软细腻", "厚实却不臃肿，冬天穿着很暖和"],
            "蕾丝": ["精致浪漫，尽显女人味", "若隐若现，增添几分温柔"],
            "网纱": ["轻盈蓬松，仙气十足", "层层叠叠，灵动又浪漫"],
            "灯芯绒": ["纹理清晰，复古又保暖", "手感厚实，秋冬穿着很温暖"],
            "聚酯纤维": ["挺括不易皱，打理起来很省心", "耐磨耐穿，不易变形"]}),
    "颜色": (["{v}的配色，{b}", "选用{v}作为主色调，{b}", "整体以{v}呈现，{b}"],
           {"黑色": ["沉稳低调，又自带显瘦效果", "经典耐看，怎么搭都不会出错"],
            "白色": ["干净清爽，透着满满的清新感", "纯净素雅，衬得肤色白皙透亮"],
            "红色": ["热情明艳，瞬间点亮整体造型", "显白又吸睛，气色看起来更好"],
            "藏青色": ["沉稳内敛，透着低调的高级感", "比黑色多了几分温柔，耐看又显白"],
            "卡其色": ["温柔大地色，自带文艺气息", "低调百搭，秋冬穿尤其有氛围"],
            "粉色": ["温柔甜美，满满的少女心", "娇嫩又减龄，衬得气色很好"],
            "灰色": ["低调耐看，透着淡淡的知性感", "中性百搭，和什么颜色都好配"],
            "米白色": ["比纯白更柔和，温柔又显气质", "干净温润，看上去很舒服"],
            "蓝色": ["清爽干净，像晴朗的天空一样", "明快又不张扬，很有清新感"],
            "绿色": ["清新自然，充满生机与活力", "小众又耐看，很显白"],
            "酒红色": ["复古优雅，显白又有韵味", "浓郁醇厚，轻松穿出高级感"],
            "杏色": ["温柔低调，衬得肤色更加柔和", "淡雅耐看，很有温柔气质"],
            "深蓝色": ["沉稳大方，显瘦又耐看", "安静内敛，透着干练的气质"],
            "黄色": ["明亮活泼，充满阳光的味道", "元气满满，让人心情都变好了"],
            "紫色": ["浪漫神秘，优雅又有格调", "温柔中带着几分高冷，很有辨识度"]}),
    "风格": (["{v}风格的设计，{b}", "整体走{v}路线，{b}", "设计上偏向{v}风格，{b}"],
           {"简约": ["简单的线条中透着高级感", "低调耐看，日常怎么穿都不会出错"],
            "休闲": ["穿着轻松自在，周末出游再合适不过", "随性舒适，满满的松弛感"],
            "复古": ["带着几分怀旧的韵味", "经典耐看，很有年代感"],
            "文艺": ["透着淡淡的书卷气", "安静又有格调"],
            "通勤": ["干练利落，上班穿很得体", "职场穿搭轻松拿捏"],
            "甜美": ["减龄又可爱，满满的少女感", "温柔可人，约会穿再合适不过"],
            "性感": ["不经意间散发女人味", "性感却不过分张扬"],
            "街头": ["个性十足，随手一搭就很酷", "潮流感满满，回头率超高"],
            "清新": ["像夏日的一阵微风，让人眼前一亮", "干净自然，看起来很舒服"],
            "优雅": ["举手投足间尽显知性", "端庄大方，气质出众"],
            "学院": ["青春减龄，洋溢着校园气息", "乖巧又有活力"],
            "英伦": ["帅气中透着精致感", "经典耐看，有种不经意的格调"]}),
    "图案": (["{v}的设计，{b}", "{n}上的{v}元素，{b}", "加入{v}元素，{b}"],
           {"纯色": ["{v}的设计简洁大方，百搭不挑人", "干净的{v}{n}耐看又有质感"],
            "条纹": ["经典又有活力，还能在视觉上拉长身形", "规律排列，简洁又时髦"],
            "格子": ["复古又文艺，透着浓浓的学院气息", "层次丰富，颇具英伦韵味"],
            "碎花": ["清新浪漫，仿佛把春天穿在了身上", "灵动自然，甜美又温柔"],
            "印花": ["生动有趣，增添了几分活泼", "色彩丰富，成为整体造型的亮点"],
            "刺绣": ["针脚细密，精致又有韵味", "立体生动，彰显独特品味"],
            "撞色": ["视觉冲击力强，时髦又吸睛", "打破了单调，层次感十足"],
            "波点": ["俏皮可爱，复古又减龄", "灵动活泼，满满的法式浪漫"],
            "线条": ["简洁流畅，勾勒出利落的轮廓", "干净利落，更显精神"],
            "字母": ["时尚个性，街头感满满", "年轻有活力，潮味十足"],
            "几何": ["个性又现代，让人眼前一亮", "富有设计感，彰显独特品味"]}),
    "裙型": (["{v}的版型，{b}", "采用{v}的廓形，{b}", "经典的{v}剪裁，{b}"],
           {"A字裙": ["上窄下宽，巧妙遮住胯部和大腿的肉肉", "轻松打造出黄金比例"],
            "直筒裙": ["线条利落，显得干练又大方", "简洁流畅，修饰腿型的同时遮肉效果极佳"],
            "包臀裙": ["完美勾勒出臀部曲线", "贴合身形，尽显女性的柔美身段"],
            "百褶裙": ["褶皱随着步伐轻轻摆动，灵动又减龄", "层次丰富，青春感满满"],
            "鱼尾裙": ["裙摆如鱼尾般散开，优雅又浪漫", "修身与飘逸兼具，走起路来摇曳生姿"],
            "蛋糕裙": ["层层叠叠，甜美又可爱", "蓬松有型，满满的少女感"],
            "一步裙": ["干练利落，通勤感十足", "紧贴身形，勾勒出曼妙曲线"],
            "牛仔裙": ["耐穿百搭，随性又有活力", "青春洋溢，轻松穿出街头感"]}),
    "裙长": (["{v}的款式，{b}", "作为一条{v}，它{b}", "设计成{v}，{b}"],
           {"短裙": ["俏皮灵动，尽显一双美腿", "青春减龄，活力满满"],
            "中长裙": ["长度刚好过膝，优雅又不拖沓", "温柔知性，还能遮住小腿的不完美"],
            "长裙": ["走起路来摇曳生姿，仙气十足", "垂坠飘逸，尽显温婉气质"],
            "半身裙": ["百搭实用，和各种上衣都能搭配", "轻松拉高腰线，显得腿更长"],
            "连衣裙": ["一件就能出门，省去了搭配的烦恼", "整体感强，轻松穿出好气质"]}),
    "裙袖长": (["{v}的设计，{b}", "采用{v}设计，{b}", "{v}的款式，{b}"], SLEEVE_LEN),
    "衣袖长": (["{v}的设计，{b}", "采用{v}设计，{b}", "{v}的款式，{b}"], SLEEVE_LEN),
    "裙领型": (["{v}的设计，{b}", "领口采用{v}设计，{b}", "经典的{v}，{b}"], COLLAR),
    "衣领型": (["{v}的设计，{b}", "领口采用{v}设计，{b}", "经典的{v}，{b}"], COLLAR),
    "衣袖型": (["{v}的设计，{b}", "搭配{v}，{b}", "袖型选用{v}，{b}"],
             {"泡泡袖": ["甜美减龄，还能修饰肩部线条", "蓬松可爱，透着复古的少女感"],
              "灯笼袖": ["蓬松有型，复古感十足", "袖口微微收紧，精致又灵动"],
              "喇叭袖": ["灵动飘逸，举手投足间尽显温柔", "袖口散开，很有法式浪漫"],
              "荷叶袖": ["轻盈灵动，甜美又不过分", "随风摆动，很有仙气"],
              "落肩袖": ["慵懒随性，还能弱化宽肩", "宽松自在，抬手活动毫无压力"],
              "蝙蝠袖": ["宽松不挑身材，轻松遮住手臂赘肉", "慵懒又时髦，很有廓形感"],
              "插肩袖": ["活动自如，运动感满满", "线条流畅，很好地修饰了肩型"]}),
    "裙款式": (DETAIL_TPL, DETAIL), "裤款式": (DETAIL_TPL, DETAIL), "衣款式": (DETAIL_TPL, DETAIL),
    "裤长": (["{v}的长度，{b}", "设计成{v}，{b}", "作为一条{v}，它{b}"],
           {"短裤": ["清凉利落，尽显一双长腿", "夏天穿着活力满满"],
            "九分裤": ["恰好露出纤细的脚踝，显高又利落", "不拖沓，看起来很有精神"],
            "七分裤": ["清爽利落，春夏都能穿", "露出小腿线条，轻盈又干练"],
            "长裤": ["包裹住双腿，显得修长挺拔", "四季都能穿，实穿度很高"],
            "五分裤": ["长度刚好在膝盖附近，休闲又不失得体", "遮住大腿又不会闷热"]}),
    "裤型": (["{v}的版型，{b}", "采用{v}的裤型，{b}", "经典的{v}剪裁，{b}"],
           {"阔腿裤": ["走路带风，遮肉效果一流", "修饰腿型，腿粗的女生也能轻松驾驭"],
            "直筒裤": ["线条利落，修饰腿型又显腿直", "简洁干练，通勤休闲都合适"],
            "哈伦裤": ["上宽下窄，轻松藏住胯部的肉肉", "休闲随性，穿着舒适无束缚"],
            "铅笔裤": ["紧贴腿部，勾勒出纤细的腿型", "简洁利落，显瘦效果明显"],
            "微喇裤": ["复古又显腿长，轻松拉长身材比例", "很好地修饰了小腿线条"],
            "工装裤": ["帅气干练，酷感十足", "实用性强，满满的街头味"],
            "灯笼裤": ["蓬松有型，慵懒又随性", "舒适宽松，藏肉效果很好"]}),
    "裤腰型": (["{v}的设计，{b}", "采用{v}设计，{b}"],
            {"高腰": ["轻松拉高腰线，打造大长腿", "显高又显瘦，还能遮住小肚腩"],
             "松紧腰": ["穿脱方便，不勒肚子", "适合不同腰围，舒适又贴合"],
             "中腰": ["不高不低刚刚好，穿着更自在", "百搭实用，和各种上衣都协调"]}),
}
OPENINGS = ["这款{item}是衣橱里不可或缺的百搭单品。", "这款{item}简约中透着小心机，上身效果非常出众。",
            "今天要推荐的是一{m}{item}，一上身就能感受到满满的质感。", "想要轻松穿出好气质，这款{item}一定不能错过。",
            "一{m}好看的{item}，能让日常穿搭瞬间出彩。", "这款{item}设计感满满，处处都能看出用心。",
            "这款{item}上身很有气质，颇有几分小众的高级感。", "简单又不简单的{item}，穿上就能感受到它的魅力。",
            "推荐一{m}超级实穿的{item}。", "这{m}{item}兼顾了舒适与好看。", "这款{item}低调中藏着不少亮点。",
            "衣橱里总少不了一{m}{item}，这一款尤其值得入手。"]
CONNECTORS = ["此外，", "同时，", "另外，", "除此之外，", "值得一提的是，"]
FILLERS = ["细节处的做工十分考究，走线平整细密。", "整体剪裁利落，上身后非常有型。",
           "不论高个子还是小个子女生，都能穿出好比例。", "简单的设计里藏着不少巧思，越看越耐看。",
           "面料经过精心处理，洗后也不易变形。", "日常打理起来很方便，省心又省力。", "看似简单，却很能穿出质感。",
           "随手一搭就很出片，拍照也很上镜。", "上身舒适度很高，久穿也不会觉得累。", "经典的款式不易过时，可以穿上好几年。",
           "简单大方的设计，和衣橱里的各种单品都好搭。", "细节满满，经得起近看。"]
CLOSINGS = {"*": ["无论是日常通勤还是周末出游，都能轻松驾驭。", "日常上班或约会逛街都很合适，实穿度很高。",
                  "简单搭配一双小白鞋，就能轻松出门。", "不管是单穿还是叠穿，都能穿出自己的风格。",
                  "穿上它，轻松成为人群中的焦点。", "值得入手一{m}，让衣橱更加丰富。", "喜欢的小仙女千万不要错过。",
                  "上身效果很赞，入手绝对不会后悔。"],
            "裙": ["搭配一件简单的T恤或针织开衫，温柔又不失时髦。", "走起路来裙摆轻扬，满满的女人味。"],
            "裤": ["搭配衬衫或T恤都很好看，轻松打造时髦造型。", "上身舒适自在，一穿就不想脱下来。"],
            "上衣": ["下身搭配牛仔裤或半身裙都很出彩，轻松穿出时髦感。", "内搭外穿两相宜，是换季必备的单品。"]}

SYSTEM_PROMPTS = ["你是一名耐心、专业的服装导购助手，用简洁友好的中文回答顾客关于商品的问题。",
                  "你是网店的智能客服，熟悉服装的尺码、面料、洗护和搭配，请给出实用的建议。",
                  "You are a helpful assistant."]
SYSTEM_PROMPTS_EN = ["You are a friendly shopping assistant for an online clothing store. "
                     "Answer briefly and helpfully.", "You are a helpful assistant."]
QUESTIONS = {
    "size": ["我身高{h}cm，体重{w}斤，穿什么码合适？", "我{h}cm、{w}斤，应该选哪个尺码？",
             "我不太会选码，身高{h}，体重{w}斤，拍哪个码比较好？"],
    "material": ["这是什么面料呀？穿着舒服吗？", "面料怎么样？会不会起球？", "想问下材质，贴身穿会不会不舒服？"],
    "wash": ["洗的时候要注意什么？", "可以直接放洗衣机洗吗？", "会不会缩水或者掉色？平时怎么洗比较好？"],
    "match": ["怎么搭配比较好看？", "有什么搭配建议吗？", "我平时不太会搭配，配什么好看？"],
    "season": ["现在这个季节能穿吗？", "什么季节穿比较合适？", "夏天穿会不会热？"],
    "occasion": ["适合上班穿吗？", "穿去公司会不会太随意？", "日常通勤能穿吗？"],
}
MATERIAL_FACTS = {  # feel, note, care, season
    "棉": dict(feel="柔软亲肤、透气吸汗，贴身穿也很舒服", note="棉质面料不容易起静电，日常穿着基本不会起球，只是容易起褶，穿之前用挂烫机熨一下会更挺括。",
              care="建议水温不超过30℃，可以机洗，选择轻柔模式；深浅色分开洗，翻面晾干，避免长时间暴晒，这样不容易褪色和变形。",
              season="棉质面料透气性好，春夏秋三季都能穿，夏天穿也不会觉得闷"),
    "纯棉": dict(feel="亲肤透气、吸湿性好，穿着很舒服", note="纯棉第一次洗可能会有轻微缩水，属于正常现象，选码时可以留一点余量。",
               care="建议冷水手洗或机洗轻柔档，不要使用漂白剂；洗后及时晾开，翻面阴干可以减少褪色。",
               season="纯棉面料吸汗透气，春夏穿最舒服，秋天内搭也很合适"),
    "雪纺": dict(feel="轻盈飘逸、垂感很好，夏天穿着很清爽", note="雪纺不会起球，不过面料比较轻薄，浅色款建议搭配肤色内衣。",
               care="建议冷水手洗，轻轻按压，不要用力搓洗和拧干；洗后直接挂起阴干，需要的话低温熨烫即可。",
               season="雪纺轻薄透气，最适合春夏穿，秋天可以外搭一件开衫或西装"),
    "真丝": dict(feel="光泽柔和、触感丝滑，穿在身上很轻盈", note="真丝比较娇贵，要避免尖锐物品勾丝，也不要长时间暴晒。",
               care="建议送干洗，或者用30℃以下的冷水加中性丝毛洗涤剂手洗，不要搓揉和拧干，阴干后低温熨烫。",
               season="真丝透气又凉爽，春夏穿最舒服，秋天作为内搭也可以"),
    "牛仔布": dict(feel="厚实挺括、耐磨耐穿，越穿越有味道", note="牛仔面料不会起球，深色款前几次洗可能会有轻微浮色，属于正常现象。",
                care="建议翻面用冷水单独洗，不要用热水，也不建议烘干，以免缩水和褪色。",
                season="牛仔布厚薄适中，春秋穿最合适，短款夏天穿也可以"),
    "针织": dict(feel="柔软有弹性，穿着没有束缚感", note="针织面料在摩擦多的部位可能会轻微起球，用毛球修剪器处理一下就好。",
               care="建议手洗，或者装进洗衣袋用羊毛档机洗，洗后平铺晾干，不要挂着晾，否则容易变形。",
               season="针织面料适合春秋穿，单穿或者叠穿都可以"),
    "亚麻": dict(feel="透气凉爽，带有自然的肌理感", note="亚麻容易起皱，这是天然纤维的正常现象，很多人反而喜欢这种随性的感觉。",
               care="建议冷水手洗，不要用力拧干，晾到半干时拉平整，熨烫时喷点水效果更好。",
               season="亚麻吸湿散热快，是夏天非常舒服的面料"),
    "羊毛": dict(feel="保暖性好，触感柔软细腻", note="羊毛在摩擦多的地方可能会轻微起球，属于正常现象，用毛球修剪器处理即可。",
               care="建议干洗，或者用冷水加羊毛专用洗涤剂轻柔手洗，不要揉搓，洗后平铺阴干。",
               season="羊毛保暖性很好，秋冬穿最合适"),
    "蕾丝": dict(feel="精致浪漫，细节很有女人味", note="蕾丝不会起球，但要注意避免被首饰或拉链勾到。",
               care="建议冷水手洗，或装进洗衣袋轻柔处理，不要暴晒和拧干，挂起阴干即可。",
               season="蕾丝款春夏穿最合适，秋天可以作为内搭叠穿"),
    "网纱": dict(feel="轻盈蓬松，很有仙气", note="网纱比较轻薄，要注意避免被尖锐物品勾丝。",
               care="建议冷水手洗，轻轻摆洗即可，不要揉搓和拧干，洗后挂起自然晾干，蓬松度会保持得更好。",
               season="网纱款春夏秋都能穿，天冷时可以搭配针织衫或外套"),
    "灯芯绒": dict(feel="纹理清晰、手感厚实，很有复古味道", note="灯芯绒不容易起球，但绒面怕压，收纳时建议挂起来。",
                care="建议翻面冷水洗，不要用力搓洗绒面，晾晒时顺着绒毛方向抚平，阴干即可。",
                season="灯芯绒有一定厚度，秋冬穿最合适"),
    "聚酯纤维": dict(feel="挺括有型、不易起皱", note="聚酯纤维耐磨不易变形，打理很省心，只是透气性比棉稍弱一些。",
                 care="可以直接机洗，水温不要超过40℃，洗后挂起晾干，基本不用熨烫。",
                 season="聚酯纤维面料一年四季都能穿，春秋最合适"),
}
EN_PRODUCTS = [
    dict(name="black A-line skirt", material="100% cotton",
         feel="Cotton is soft and breathable, so it stays comfortable all day.",
         care="Machine wash cold on a gentle cycle, wash dark colours separately and hang it inside out to dry. "
              "Skip the dryer to avoid shrinking.",
         fit="The A-line cut is forgiving around the hips, so your usual size should work.",
         match="A tucked-in white T-shirt or a fitted knit top works well. "
               "Add white sneakers for a casual look, or loafers for the office.",
         season="Yes, cotton breathes well, so it works from spring through early autumn."),
    dict(name="white linen shirt", material="linen",
         feel="Linen is light and cool, with a natural texture. "
              "It does wrinkle easily, which is part of its relaxed charm.",
         care="Hand wash or use a gentle machine cycle in cold water. "
              "Don't wring it; hang it to dry and iron it while slightly damp.",
         fit="It has a relaxed fit. If you prefer a neater look, you can size down.",
         match="Try it with straight-leg jeans or wide-leg trousers. "
               "Half-tucked with sandals is a great summer look.",
         season="Definitely. Linen is one of the coolest fabrics for hot weather."),
    dict(name="high-waisted wide-leg jeans", material="denim",
         feel="The denim is sturdy but not stiff, and it softens with wear.",
         care="Turn them inside out and wash cold, separately for the first few washes, "
              "since dark denim can bleed a little. Air dry to avoid shrinking.",
         fit="The waist is fitted while the legs are roomy, so choose by your waist measurement. "
             "If you're between sizes, size up.",
         match="A cropped knit or a tucked-in shirt balances the wide legs. Sneakers or pointed flats both work.",
         season="They're best for spring and autumn; in summer they can feel a bit warm."),
    dict(name="grey wool sweater", material="wool", feel="It's warm and soft, and not itchy for most people.",
         care="Hand wash in cold water with a wool detergent, or dry clean. "
              "Don't wring it, and dry it flat so it keeps its shape.",
         fit="It's a slightly oversized fit, so your usual size gives a relaxed look.",
         match="It looks great over a collared shirt, with jeans or a pleated skirt.",
         season="It's an autumn and winter piece. In summer it would be too warm."),
    dict(name="floral chiffon midi dress", material="chiffon",
         feel="Chiffon is light and flowy, with a nice drape when you walk.",
         care="Hand wash in cold water and press gently instead of rubbing. "
              "Hang to dry and use a low iron setting if needed.",
         fit="The waist is softly defined and the skirt is loose, so go with your usual size.",
         match="Pair it with strappy sandals in summer, or a denim jacket and ankle boots when it gets cooler.",
         season="Yes, it's light and airy, perfect for spring and summer."),
]
EN_QA = {
    "size": ("I'm {h} cm tall and about {w} kg. Which size should I get?",
             "Based on your height and weight, I'd suggest size {size}. {fit} "
             "You can also check the size chart on the product page for exact measurements."),
    "material": ("What is it made of? Is it comfortable?", "It's made of {material}. {feel}"),
    "wash": ("How should I wash it?", "{care}"),
    "match": ("What would you pair it with?", "{match}"),
    "season": ("Can I wear it in summer?", "{season}"),
}


if __name__ == "__main__":
    main()
