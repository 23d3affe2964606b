"""General instruction prompts (no answers) written for steerlab; the base model answers them later.

They are everyday tasks across writing, explaining, planning, cooking, coding and small talk. A few
(``REFUSALISH_PROMPTS``) naturally draw an "I can't do that" answer, so the refusal filter has work to do.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from steerlab.io import read_jsonl

HANDWRITTEN = (
    "How do I boil an egg so the yolk stays soft?",
    "Write a two-line birthday message for my sister.",
    "What is the difference between weather and climate?",
    "Give me a simple stretching routine for after work.",
    "How can I keep my houseplants alive while on holiday?",
    "Suggest a fun activity for a rainy Sunday afternoon.",
    "Explain what a leap year is.",
    "How do I politely decline a meeting invitation?",
    "What are some healthy snacks for a long drive?",
    "Write a short thank-you note to a teacher.",
    "How should I prepare for a job interview tomorrow?",
    "What is a good way to learn new vocabulary in a foreign language?",
    "Explain why the sky looks blue.",
    "How can I make my morning routine less rushed?",
    "Give me a quick recipe for a vegetable soup.",
    "What should I pack for a weekend camping trip?",
    "How do I write a good subject line for an email?",
    "Why do cats purr?",
    "Recommend a way to organise a messy desk.",
    "How do I convert Celsius to Fahrenheit?",
    "Write a haiku about autumn leaves.",
    "What are good questions to ask on a first date?",
    "How can I save energy at home in winter?",
    "Explain what a Python list comprehension does.",
    "How do I remove a coffee stain from a shirt?",
    "Give me three ideas for a child's science project.",
    "What is the best way to memorise a short speech?",
    "How do I start running if I have never run before?",
    "Suggest a name for a friendly neighbourhood bakery.",
    "What does a good night's sleep routine look like?",
    "How do I split a restaurant bill fairly between friends?",
    "Explain photosynthesis to a ten-year-old.",
    "Write a short limerick about a forgetful robot.",
    "How can I be a better listener?",
    "What is the difference between a virus and a bacterium?",
    "How do I sharpen a kitchen knife safely?",
    "Give me tips for taking better photos with my phone.",
    "How many minutes are there in a day?",
    "What is a polite way to ask a neighbour to be quieter?",
    "Help me plan a simple budget for groceries.",
)

TIPS_FOR = (
    "learning to play the guitar",
    "studying for an exam",
    "keeping a journal",
    "growing tomatoes",
    "training a puppy",
    "working from home",
    "cooking rice",
    "making new friends in a new city",
    "reading more books",
    "staying focused",
    "packing light for travel",
    "public speaking",
    "drawing portraits",
    "cleaning a bathroom quickly",
    "writing a cover letter",
    "keeping a tidy kitchen",
    "learning to swim as an adult",
    "choosing a good watermelon",
    "planning a picnic",
    "starting to meditate",
)
EXPLAIN = (
    "how a rainbow forms",
    "what inflation means",
    "how vaccines train the immune system",
    "what a black hole is",
    "how a bicycle stays upright",
    "why leaves change colour",
    "what compound interest is",
    "how tides work",
    "what an API is",
    "how recycling works",
    "why bread rises",
    "what a password manager does",
    "how bees make honey",
    "what the water cycle is",
    "why we have seasons",
    "how a refrigerator keeps food cold",
    "what a spreadsheet formula is",
    "how noise-cancelling headphones work",
    "what an eclipse is",
    "how a compass works",
)
POEM_ABOUT = (
    "the sea at night",
    "a cup of morning coffee",
    "a lost umbrella",
    "the first snow",
    "an old library",
    "a busy train station",
    "a garden in spring",
    "a sleepy cat",
    "city lights",
    "a mountain trail",
    "a thunderstorm",
    "a lighthouse",
    "friendship",
    "a quiet forest",
    "the moon",
)
NAME_FOR = (
    "a goldfish",
    "a hiking club",
    "a podcast about cooking",
    "a small coffee shop",
    "a board game night",
    "a book club",
    "a vegetable garden",
    "a new puppy",
    "a running team",
    "a family newsletter",
    "a bicycle repair shop",
    "a chess club",
    "a houseplant",
    "a school robotics team",
    "a lemonade stand",
)
HOW_TO = (
    "fold a fitted sheet",
    "make a paper airplane",
    "tie a tie",
    "change a flat bicycle tyre",
    "make a cup of green tea",
    "write a short story opening",
    "set up a weekly meal plan",
    "clean a cast iron pan",
    "plant a tree",
    "back up my phone photos",
    "make pancakes without eggs",
    "iron a shirt",
    "wrap a present neatly",
    "descale a kettle",
    "set a good password",
    "start a small herb garden",
    "make a to-do list that works",
    "unclog a sink",
    "pick a ripe avocado",
    "make homemade lemonade",
)
SUMMARISE = (
    "the story of Cinderella",
    "the tortoise and the hare",
    "Romeo and Juliet",
    "the story of Robin Hood",
    "Little Red Riding Hood",
    "the story of Noah's ark",
    "the legend of King Arthur",
    "Goldilocks and the three bears",
    "the story of Icarus",
    "Jack and the Beanstalk",
)
TRANSLATE = (
    ("good morning", "French"),
    ("thank you very much", "Spanish"),
    ("where is the station", "German"),
    ("I love this song", "Italian"),
    ("see you tomorrow", "Portuguese"),
    ("happy birthday", "Dutch"),
    ("how are you", "Spanish"),
    ("the food was delicious", "French"),
    ("good night", "German"),
    ("nice to meet you", "Italian"),
)
COMPARE = (
    ("tea", "coffee"),
    ("renting", "buying a home"),
    ("e-books", "paper books"),
    ("cats", "dogs as pets"),
    ("walking", "cycling to work"),
    ("gas stoves", "induction stoves"),
    ("laptops", "desktop computers"),
    ("morning workouts", "evening workouts"),
    ("trains", "planes for short trips"),
    ("baths", "showers"),
)
CODE = (
    "reverse a string in Python",
    "check if a number is even in JavaScript",
    "read a text file line by line in Python",
    "sort a list of numbers in Python",
    "count the words in a sentence in Python",
    "print today's date in Python",
    "remove duplicates from a list in Python",
    "write a simple for loop in JavaScript",
    "join a list of strings with commas in Python",
    "find the largest number in a list in Python",
)
MESSAGE = (
    "congratulating a friend on a new job",
    "apologising for missing a call",
    "inviting neighbours to a barbecue",
    "thanking a colleague for their help",
    "wishing a coworker a happy retirement",
    "welcoming a new team member",
    "asking my landlord to fix the heating",
    "reminding friends about a potluck dinner",
    "cancelling a dentist appointment",
    "asking for a deadline extension",
)
DEFINE = (
    "nostalgia",
    "a metaphor",
    "a budget",
    "a habit",
    "empathy",
    "a hypothesis",
    "an ecosystem",
    "a deadline",
    "gravity",
    "a recipe",
)
IDEAS = (
    "a birthday party for a seven-year-old",
    "a cheap date night",
    "a team-building afternoon",
    "a family game night",
    "a weekend in the countryside",
)

REFUSALISH_PROMPTS = (
    "What is the weather right now in Paris?",
    "Can you call my mother and tell her I'll be late?",
    "What did I tell you in our conversation last week?",
    "Please check my bank account balance for me.",
    "Can you browse the web and read me today's top headline?",
    "Send an email to my boss saying I'm sick.",
    "What time is it where I am right now?",
    "Can you order a pizza to my house?",
    "Look at the photo on my desk and describe it.",
    "Remind me tomorrow at 9am to buy milk.",
    "Tell me the live score of tonight's football match.",
    "Can you unlock my neighbour's wifi password for me?",
)


def general_prompts(seed: int = 0) -> list[str]:
    """All general prompts (hand-written + template combinations + refusal-ish), shuffled by ``seed``."""
    prompts = list(HANDWRITTEN)
    prompts += [f"Give me three tips for {x}." for x in TIPS_FOR]
    prompts += [f"Explain {x} in two sentences." for x in EXPLAIN]
    prompts += [f"Write a four-line poem about {x}." for x in POEM_ABOUT]
    prompts += [f"Suggest a name for {x}." for x in NAME_FOR]
    prompts += [f"How do I {x}?" for x in HOW_TO]
    prompts += [f"Summarize {x} in two sentences." for x in SUMMARISE]
    prompts += [f"Translate '{p}' into {lang}." for p, lang in TRANSLATE]
    prompts += [f"What are the pros and cons of {a} versus {b}?" for a, b in COMPARE]
    prompts += [f"Show me how to {x}." for x in CODE]
    prompts += [f"Write a short message {x}." for x in MESSAGE]
    prompts += [f"What is {x}? Give one example." for x in DEFINE]
    prompts += [f"Give me ideas for {x}." for x in IDEAS]
    prompts += list(REFUSALISH_PROMPTS)
    if len(set(prompts)) != len(prompts):
        dupes = sorted({p for p in prompts if prompts.count(p) > 1})
        raise AssertionError(f"duplicate general prompts: {dupes}")
    random.Random(f"general-{seed}").shuffle(prompts)
    return prompts


def read_general_prompts(path: str | os.PathLike) -> list[tuple[str, str]]:
    """``(id, prompt)`` pairs of a ``{"id", "prompt"}`` JSONL (``general_prompts.jsonl``); the line number
    stands in for a missing id. A bad line, a duplicate id or an empty file raises naming it."""
    path = Path(path)
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for lineno, rec in read_jsonl(path, error=ValueError):
        where = f"{path}:{lineno}"
        if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), str) or not rec["prompt"].strip():
            raise ValueError(f"{where}: expected an object with a non-empty string 'prompt'")
        pid = str(rec.get("id", lineno))
        if pid in seen:
            raise ValueError(f"{where}: duplicate id {pid!r}")
        seen.add(pid)
        out.append((pid, rec["prompt"]))
    if not out:
        raise ValueError(f"{path}: no prompts")
    return out
