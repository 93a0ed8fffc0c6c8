"""Category codes of needs and offers. Extend, never rename: codes are stored in the database,
in exports and in SMS keywords. The order fixes each code's integer index for the matcher."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Category(StrEnum):
    water = "water"
    food = "food"
    shelter = "shelter"
    medical = "medical"
    medicine = "medicine"
    evacuation = "evacuation"
    transport = "transport"
    firefighting = "firefighting"
    clothing = "clothing"
    hygiene = "hygiene"
    labour = "labour"
    animals = "animals"
    power = "power"
    other = "other"


@dataclass(frozen=True, slots=True)
class CategoryInfo:
    code: Category
    ru: str
    en: str
    icon: str


CATEGORIES: dict[Category, CategoryInfo] = {
    info.code: info
    for info in (
        CategoryInfo(Category.water, "Питьевая вода", "Drinking water", "💧"),
        CategoryInfo(Category.food, "Еда", "Food", "🍞"),
        CategoryInfo(Category.shelter, "Жильё, ночлег", "Shelter", "🏠"),
        CategoryInfo(Category.medical, "Медицинская помощь", "Medical help", "🩺"),
        CategoryInfo(Category.medicine, "Лекарства", "Medicine", "💊"),
        CategoryInfo(Category.evacuation, "Эвакуация", "Evacuation", "🚨"),
        CategoryInfo(Category.transport, "Транспорт", "Transport", "🚗"),
        CategoryInfo(Category.firefighting, "Тушение пожара, снаряжение", "Firefighting and gear", "🧯"),
        CategoryInfo(Category.clothing, "Одежда", "Clothing", "🧥"),
        CategoryInfo(Category.hygiene, "Гигиена", "Hygiene", "🧼"),
        CategoryInfo(Category.labour, "Рабочие руки", "Labour", "🛠"),
        CategoryInfo(Category.animals, "Помощь животным", "Animals", "🐾"),
        CategoryInfo(Category.power, "Электричество, генераторы", "Power, generators", "🔌"),
        CategoryInfo(Category.other, "Другое", "Other", "📦"),
    )
}

CATEGORY_INDEX: dict[Category, int] = {code: i for i, code in enumerate(Category)}


def label(code: Category | str, language: str = "ru") -> str:
    info = CATEGORIES[Category(code)]
    return info.en if language == "en" else info.ru
